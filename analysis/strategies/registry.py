"""Every kind of mask strategy, and what a strategy is (:class:`MaskStrategy`).

:data:`KINDS` is the one list of kinds: params validation (``masks.presets.NAME.kind``,
:mod:`analysis.strategies.presets`), the factory (:func:`~analysis.strategies.factory.build_strategy`),
:class:`~analysis.strategies.machine.MachineSpecificStrategy` and the tests read it.
No numpy and no torch here: it names classes, :func:`strategy_class` imports one when asked.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from analysis.strategies.errors import StrategySettingError

# Kind -> the class in ``analysis.strategies`` (a name of its EXPORTS; tests/test_dvc_deps.py
# reads this literal too: a module that calls strategy_class may run any of them).
KINDS: dict[str, str] = {
    "audio_specific": "AudioSpecificStrategy",
    "training_audio": "TrainingAudioStrategy",
    "dsr_perlin": "TrainingPerlinStrategy",
    "perlin": "PerlinStrategy",
    "python": "ImportedStrategy",
    "mixture": "MixtureStrategy",
    "machine_specific": "MachineSpecificStrategy",
}
# Kinds a ``masks.presets`` entry may have. ``mixture`` is a fitted form (written by the
# ``recommend`` stage); ``machine_specific`` reads ``build/recommendations.json``, so no preset
# (drawn before any recommendation exists) can be one.
PRESET_KINDS: tuple[str, ...] = (
    "audio_specific",
    "training_audio",
    "dsr_perlin",
    "perlin",
    "python",
)
# Kinds :func:`~analysis.strategies.factory.build_strategy` builds from a settings mapping: a
# preset's, or a recommendation's (a fitted setting is ``audio_specific``, or a ``mixture``).
SETTING_KINDS: tuple[str, ...] = (*PRESET_KINDS, "mixture")


@runtime_checkable
class MaskStrategy(Protocol):
    """What a training loop (and the ``masks`` stage) calls; every registered kind is one.

    Constructors follow the training code's convention, ``Strategy(spectrogram_shape,
    q_shape, n_mels, T, **settings)``, and take ``seed=`` (an int: a fixed stream; None: the
    process's global RNGs, so DataLoader workers differ); all but ``python`` and
    ``machine_specific`` also take ``generator=`` (a numpy or torch generator). A bad
    setting raises :class:`~analysis.strategies.errors.StrategySettingError` naming it.
    """

    kind: str
    spectrogram_shape: tuple[int, int]
    q_shape: tuple[int, int]

    def __call__(self, batch_size: int, device: Any = "cpu") -> Any:
        """(B, 1, H_q, W_q) float32 0/1 masks, a torch tensor on ``device``."""

    def full_size(self, batch_size: int) -> Any:
        """(B, n_mels, T) bool masks at spectrogram size (a numpy array)."""

    def describe(self) -> str:
        """A short text saying what the strategy draws, for the report."""


def check_kind(kind: Any, allowed: tuple[str, ...] = tuple(KINDS)) -> str:
    """``kind`` if it is one of ``allowed``, else a StrategySettingError naming ``kind``."""
    if kind not in allowed:
        raise StrategySettingError("kind", f"one of {', '.join(allowed)}", kind)
    return kind


def strategy_class(kind: str) -> type:
    """The class registered for ``kind`` (imported now)."""
    import analysis.strategies as package

    return getattr(package, KINDS[check_kind(kind)])
