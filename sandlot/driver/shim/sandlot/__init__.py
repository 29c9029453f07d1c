"""Inside a sandbox, ``import sandlot`` finds this shim: the names interface files use.

The driver appends the shim's directory to ``sys.path`` last, so a real sandlot
installed in the sandbox's environment wins over it.
"""

from sandlot_driver.exposed import expose, models

__all__ = ["expose", "models"]
