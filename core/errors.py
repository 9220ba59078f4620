"""One exception type for anything the user can fix; the CLI and pages show its message as-is."""


class UserError(Exception):
    """Bad input: the message is one sentence that says what is wrong and what to do."""


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is set; a training run keeps its last checkpoint."""


class Pruned(Cancelled):
    """Raised inside a sweep's trial run that its sweep's pruner stopped after `epoch`."""

    def __init__(self, epoch: int, message: str):
        super().__init__(message)
        self.epoch = epoch
