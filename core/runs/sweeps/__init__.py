"""Sweeps: hyperparameter searches (the poster's Fig. 2) on Optuna, where every trial is an
ordinary run.

A sweep is an Optuna study (LANDMARKS_HOME/sweeps.db by default; `storage` may be any URL Optuna
takes, e.g. PostgreSQL, so that several machines work on one study). The study keeps the base
configuration, the search space and the sampler in its user attributes; each trial keeps the
run that trained it (`run_id`, `host`) in its own.

The driver (`drive`) asks Optuna for configurations, queues each as a run through the one job
queue (as many at once as the device has slots: one per GPU, one on the CPU, plus one waiting), and
tells Optuna how each ended. A trial's own worker reports each epoch's validation accuracy to the
study as the epoch ends and, in a pruning sweep, asks Optuna's median pruner whether to go on: a
hopeless trial stops at once and its run shows as "pruned" with the epoch it stopped at.
With `seeds` (sweep --seeds 0,1,2) a trial trains one run per seed on one shared split, as one seed
group (core.runs.groups), and tells Optuna the group's mean validation accuracy; the trial keeps
its group, members, n, mean and sd.
It holds no state of its own: a driver started again (after a crash, a kill, an app restart)
adopts the running trials of its host whose driver is gone — or that never got a driver recorded,
whatever moment the driver died — and goes on. Grid sweeps enqueue every configuration once when
the study is created; a driver takes one with Optuna's WAITING→RUNNING step and records itself on
it under one lock: a file lock beside an SQLite storage (where Optuna's step is not atomic), the
database's row lock on a server, so two drivers never train the same configuration.

A storage URL's password is never shown or stored with the URL: it is kept in
LANDMARKS_HOME/credentials.json (mode 0600) under the URL without it, or read from
LANDMARKS_STORAGE_PASSWORD / LANDMARKS_STORAGE_PASSWORD_FILE (or libpq's own PGPASSWORD, ~/.pgpass).
"""
from core.runs.sweeps.driver import MAX_RESUMES, drive  # noqa: F401
from core.runs.sweeps.space import (FIXED, SAMPLER_MAKERS, SAMPLERS, _distributions, grid,  # noqa: F401
                                    parse_space, trial_config)
from core.runs.sweeps.storage import (CREDENTIALS, DB_FILE, PASSWORD_ENV, PASSWORD_FILE_ENV,  # noqa: F401
                                      _credentials_file, _with_password, claim_lock, masked, open_storage,
                                      storage_url)
from core.runs.sweeps.study import (NOTE_MAX, PRUNE_STARTUP_TRIALS, PRUNE_WARMUP_EPOCHS, STATE,  # noqa: F401
                                    cancel_sweep, check_name, create, describe, epoch_reporter, importance, info,
                                    load, names, seed_noise, set_note, trial_stats)
