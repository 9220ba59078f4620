"""Compile when it pays (issue 11): whether a run uses `torch.compile`, and the sentence that says
why for the run's events.

`torch.compile` costs a fixed time before the first step (tracing, then Inductor's code
generation, then Triton autotuning) and saves a fraction of every step after it. On the H200 of
issue 11 a 3-epoch ResNet-18 run at 224 px was slower compiled (8,029 img/s against 10,195; about
40 s of compilation, more than it saved), so "auto" compiles only a run long enough to pay that
back, only on CUDA (on the CPU Inductor took 59 s and was no faster per step, see
docs/BENCHMARKS.md; MPS support is partial), and says which it chose.

The threshold, in optimizer steps (the unit the engine knows before it starts):

    pays back when  steps x (eager step - compiled step) > compile cost

ResNet-18 at 224 px, batch 256, bf16, channels_last runs 12,751 img/s fed from memory on that
H200: 20 ms a step. A compute-bound convolutional step gains 10-20% compiled (cuDNN does the
convolutions either way; Inductor fuses the batch-norm, activation, optimizer and casting work
around them), 2-4 ms a step, so 40 s pays back after 10,000-20,000 steps; "auto" takes the safe
end, COLD_STEPS = 20,000. At batch 32 a step is shorter, but launch-bound, and compiling saves a
similar absolute time per step (fewer, fused kernels), so the same count holds roughly. Examples:
the poster's 10 epochs of 19,000 images at batch 256 are 740 steps (eager); GLDv2's top 1,000
classes (~500,000 images) for 10 epochs at batch 256 are ~20,000 steps (compiled).

A warm machine compiles much faster: Inductor's FX-graph cache and AOTAutograd cache (on by
default since torch 2.5/2.6, in TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_$USER) turn a
repeat compile of the same model and shapes into loading the kernels, ~5-10 s instead of 40 s;
`torch.compiler.save_cache_artifacts()` / `load_cache_artifacts()` (the "mega-cache", torch >=
2.7) carry those caches to a fresh machine. With the cost down 4-8x, so is the threshold:
WARM_STEPS = 4,000. The engine marks a (model, image size, batch) as compiled on this machine
after a compiled run (`note_compiled`), and `warm_cache` reads that mark back; it is a hint (the
Inductor cache may have been cleaned since), which only moves the threshold.

CUDA graphs were considered and are not used by "auto" (`torch.compile(mode="default")`):
- mode="reduce-overhead" (CUDA graphs) removes kernel-launch time, which is 1-2 ms of a 20 ms
  compute-bound ResNet-18 step at batch 256: <= 10%. It records one graph per input shape (the
  epoch's last, smaller batch is a second one; evaluation another), keeps a static memory pool
  for each for the whole run, and replays overwrite the previous step's outputs, which this
  engine's tally keeps on the device for a quarter of a second between reads. Worth it only for
  small, launch-bound batches; `--compile on` users can still choose it outside "auto".
- mode="max-autotune-no-cudagraphs" benchmarks Triton templates for every matmul/convolution:
  minutes of compile for convolutions cuDNN already runs well; it would raise the threshold
  several-fold for a gain that was not measured here.
The engine should compile with dynamic=False (one static graph for the full batch; the last
partial batch compiles once more, its own static graph) and evaluate with the eager module (same
parameters; evaluation is a small part of a long run and would otherwise compile graphs in eval
mode too).
"""
from __future__ import annotations

import hashlib
import os

SETTINGS = ("auto", "on", "off")
COLD_STEPS = 20_000   # steps from which "auto" compiles when this machine has not compiled the model
WARM_STEPS = 4_000    # ... and when it has (Inductor's caches make the compile ~5-10 s instead of ~40 s)

# Compile cost relative to ResNet-18's measured 40 s: scales the thresholds. Only resnet18 was
# measured (issue 11, H200, torch 2.11); the others are estimates from their number of layers
# and operators (deeper or more operator-rich graphs take longer to trace and generate).
COST_FACTOR = {"resnet18": 1.0, "vgg16": 0.6, "resnet50": 1.8, "efficientnet_lite0": 2.0,
               "mobilenet_v3_large": 2.0, "small_cnn": 0.3}
COMPILE_KWARGS = {"dynamic": False}   # mode "default": see the module docstring on CUDA graphs


def _setting(setting) -> str:
    """True/False (the config's older boolean field) read as "on"/"off"."""
    if setting is True:
        return "on"
    if setting is False or setting is None:
        return "off"
    s = str(setting).lower()
    if s not in SETTINGS:
        raise ValueError(f"compile setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    return s


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def threshold(model_name: str, warm: bool) -> int:
    """Steps from which "auto" compiles this model."""
    return int(round((WARM_STEPS if warm else COLD_STEPS) * COST_FACTOR.get(model_name, 1.5), -2))


def compile_choice(setting, device, total_steps: int, model_name: str, warm: bool | None = None) -> tuple[bool, str]:
    """(compile?, one sentence for the run's events). `total_steps`: optimizer steps this run
    will still take (a resumed run: the remaining epochs). `warm`: whether this machine has
    compiled the model before (None: ask `warm_cache`)."""
    s, kind = _setting(setting), _device_type(device)
    if s == "off":
        return False, "compile off (as set)"
    if kind != "cuda":
        why = ("on the CPU Inductor compiled for about a minute and was no faster per step"
               if kind == "cpu" else f"torch.compile is not used on {kind}")
        return False, f"compile {s} but not used: the device is {kind} ({why})"
    if s == "on":
        return True, "compile on (as set): the first steps wait for torch.compile"
    if warm is None:
        warm = warm_cache(model_name)
    need = threshold(model_name, warm)
    cache = ("this machine compiled it before (Inductor's cache makes that quick)" if warm
             else "compiling costs about " + f"{40 * COST_FACTOR.get(model_name, 1.5):.0f} s the first time")
    if total_steps >= need:
        return True, (f"compile auto: on, {total_steps:,} steps is long enough to pay back compiling "
                      f"{model_name} (from {need:,}; {cache})")
    return False, (f"compile auto: off, {total_steps:,} steps is too short to pay back compiling {model_name} "
                   f"(from {need:,}; {cache})")


# ------------------------------------------------------------------ warm-cache marks

def _mark(model_name: str, key: str = "") -> "os.PathLike":
    from core.paths import cache_dir
    import torch
    h = hashlib.sha1(f"{model_name}|{key}|{torch.__version__}".encode()).hexdigest()[:16]
    return cache_dir() / "compiled" / h


def inductor_cache_dir() -> str:
    """Where Inductor keeps compiled kernels (TORCHINDUCTOR_CACHE_DIR or its /tmp default)."""
    import getpass
    import tempfile
    d = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if d:
        return d
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (containers): Inductor uses the same fallback
        user = "unknown"
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")


def warm_cache(model_name: str, key: str = "") -> bool:
    """Whether a compiled run of `model_name` (and `key`: image size, batch...) finished on this
    machine with this torch, and Inductor's cache folder is still there."""
    try:
        return _mark(model_name, key).exists() and os.path.isdir(inductor_cache_dir())
    except Exception:  # noqa: BLE001 - an unreadable cache is a cold cache
        return False


def note_compiled(model_name: str, key: str = "") -> None:
    """After a compiled run: the next one with the same model and key may take WARM_STEPS."""
    try:
        m = _mark(model_name, key)
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    except OSError:
        pass
