"""What backends share, below all of them: each backend imports this kit, never another backend.

- :mod:`.bootstrap`: where the driver's files are on the host, the bootstrap
  that starts them on a far side, the start-up's timeouts, and
  :class:`~.bootstrap.IsolationWarning`;
- :mod:`.flow`: the flow valve and the queued sink that bound the bytes a pump
  holds between the host and a driver;
- :mod:`.remote`: a driver at the far end of any process's stdin and stdout
  (:class:`~.remote.RemoteProcess`, :func:`~.remote.start_over`, and
  :func:`~.remote.driver_exit`, its exit status read as a cause of death),
  shared by the SSH and Modal backends;
- :mod:`.store`: the host side of named volumes (where they live, a mount's
  source directory), for backends that mount them.

The contract a backend meets is :mod:`sandlot.backends.base`; where a sandbox's
workdir, driver and user are inside it is :mod:`sandlot.driver.farside`.
"""
