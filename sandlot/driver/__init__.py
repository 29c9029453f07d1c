"""The driver: the standard-library program that runs inside every sandbox.

It is shipped into the sandbox by the host (bound read-only under the name
``sandlot_driver``) and imports nothing outside the standard library.
"""
