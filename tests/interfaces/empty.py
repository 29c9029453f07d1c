"""No @expose functions at all."""


def f() -> int:
    return 1
