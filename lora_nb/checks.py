"""The one type guard the settings share: an integer that is not a bool."""


def is_int(value) -> bool:
    """An int that is not a bool (True is an int to Python, not a rank, a count or a seed)."""
    return isinstance(value, int) and not isinstance(value, bool)
