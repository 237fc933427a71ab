"""User-facing errors: the command line prints them as one line and exits with code 2."""


class DDSRError(Exception):
    """Bad input from the user (option file, data, checkpoint). Message names the key or file."""


class UnknownTypeError(DDSRError, KeyError):
    """A ``type:`` that no registry knows. Subclasses KeyError, as BasicSR's registry raises KeyError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ''


class NonFiniteLossError(DDSRError):
    """Training produced a NaN/Inf loss or gradient; raised after the last good training state was saved."""
