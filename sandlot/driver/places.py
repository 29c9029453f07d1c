"""Where things are inside every sandbox, on the host's local backend and on a stream
backend's far side alike, and how every driver's and template's boot line begins.

Its own module, of constants only: a template imports it before it forks its first
sandbox (whose start is the template's), and the far side's module imports
``subprocess`` and ``shutil``.
"""

SANDBOX_UID = 65534  # the user (nobody) the code runs as when the driver starts as root
DRIVER_INSIDE = "/.sandlot"  # the driver's directory (holding sandlot_driver)
WORKDIR_INSIDE = "/workspace"
# Where a template in a user namespace (a host that is not root) sees its sandboxes'
# workdirs; each sandbox binds its own at WORKDIR_INSIDE and unmounts this.
SLOTS_INSIDE = f"{DRIVER_INSIDE}/slots"
# The directories each sandbox forked from a template gets a fresh tmpfs on.
FRESH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# How every driver's and template's boot line begins: no garbage collection while they
# import (about 2 of a cold driver's 20 ms of imports here); the driver turns it back on
# before any of the sandbox's code runs, the template once it has settled.
GC_OFF = "import gc; gc.disable(); "
