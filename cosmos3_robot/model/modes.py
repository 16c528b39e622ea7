"""Modes are data: which DM streams a sample carries, in which order, and which are noisy.

DM streams: ``video_context`` (latent frames up to now), ``video_future`` (later frames)
and ``actions`` (one token per control step). A mode lists its streams in layout order:
clean conditioning first, noisy targets after (checked on construction). The loss covers
exactly the noisy streams; the model never branches on the mode's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Stream = Literal["video_context", "video_future", "actions"]
STREAMS: tuple[Stream, ...] = ("video_context", "video_future", "actions")


@dataclass(frozen=True)
class Mode:
    """A task as a token layout.

    Attributes:
        name: registry name.
        streams: ``(stream, noisy)`` pairs in layout order; clean ones before noisy ones.
        text_loss: train the Reasoner with next-token cross-entropy on the text.
        description: what the mode computes.
    """

    name: str
    streams: tuple[tuple[Stream, bool], ...]
    text_loss: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        seen_noisy = False
        names = [s for s, _ in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"mode {self.name!r}: a stream appears twice in {names}")
        for stream, noisy in self.streams:
            if stream not in STREAMS:
                raise ValueError(f"mode {self.name!r}: unknown stream {stream!r}; streams: {STREAMS}")
            if seen_noisy and not noisy:
                raise ValueError(f"mode {self.name!r}: clean stream {stream!r} after a noisy one")
            seen_noisy |= noisy

    @property
    def clean(self) -> tuple[Stream, ...]:
        return tuple(s for s, n in self.streams if not n)

    @property
    def noisy(self) -> tuple[Stream, ...]:
        return tuple(s for s, n in self.streams if n)

    def has(self, stream: Stream) -> bool:
        return any(s == stream for s, _ in self.streams)


MODES: dict[str, Mode] = {m.name: m for m in [
    Mode("vlm", (), text_loss=True, description="text/image understanding: next text token"),
    Mode("text_to_video", (("video_future", True),), description="text -> video"),
    Mode("image_to_video", (("video_context", False), ("video_future", True)),
         description="text + first frame(s) -> later frames"),
    Mode("forward_dynamics", (("video_context", False), ("actions", False), ("video_future", True)),
         description="world simulator: context video + actions -> future video"),
    Mode("inverse_dynamics", (("video_context", False), ("video_future", False), ("actions", True)),
         description="context and future video -> the actions between them"),
    Mode("policy", (("video_context", False), ("video_future", True), ("actions", True)),
         description="context video -> future video and actions, co-generated"),
    Mode("policy_actions", (("video_context", False), ("actions", True)),
         description="context video -> actions only (no video generated: fastest)"),
]}


def get_mode(name: str | Mode) -> Mode:
    if isinstance(name, Mode):
        return name
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; available: {sorted(MODES)}")
    return MODES[name]
