"""The masks an annotator is editing: one per lesion, with undo and redo, and the box and clicks being drawn.

Every change (a prompt's result, a brush edit, a new or removed lesion, a clear) replaces the lesion list
and pushes the old one on the undo stack; undo and redo move between them. The box and the corrective
clicks of the active lesion are kept so that the next click refines the same prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .prompts import Click, PromptResult

MAX_HISTORY = 50  # steps of undo per scan (each a few bool masks: ~0.3 MB for a BUSI scan)


@dataclass
class LesionMasks:
    shape: tuple[int, int]
    lesions: list[np.ndarray] = field(default_factory=list)  # (H, W) bool each; never empty ones after a change
    active: int = 0  # the lesion that prompts and the brush edit (== len(lesions) for a new one)
    undo_stack: list[list[np.ndarray]] = field(default_factory=list)
    redo_stack: list[list[np.ndarray]] = field(default_factory=list)
    corner: tuple[float, float] | None = None  # the first corner of a box being drawn
    box: tuple[float, float, float, float] | None = None  # the active lesion's box prompt
    clicks: list[Click] = field(default_factory=list)  # its corrective clicks
    last: PromptResult | None = None  # its last prompt result (the next click refines it)

    @classmethod
    def from_mask(cls, mask: np.ndarray, split: bool = False) -> LesionMasks:
        """Start from one mask (the model's), as one lesion, or with ``split`` one per connected region."""
        mask = np.asarray(mask, bool)
        state = cls(mask.shape)
        if mask.any():
            if split:
                import cv2
                n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
                state.lesions = [labels == k for k in range(1, n)]
            else:
                state.lesions = [mask]
        return state

    @property
    def union(self) -> np.ndarray:
        out = np.zeros(self.shape, bool)
        for m in self.lesions:
            out |= m
        return out

    def labels(self) -> np.ndarray:
        """One image, 0 for background and k for lesion k (1-based); a later lesion wins where two overlap."""
        out = np.zeros(self.shape, np.uint8)
        for k, m in enumerate(self.lesions, start=1):
            out[m] = k
        return out

    def _forget_prompt(self) -> None:
        self.corner, self.box, self.clicks, self.last = None, None, [], None

    def replace(self, lesions: list[np.ndarray], keep_prompt: bool = False) -> None:
        """A change: the new lesion list, the old one undoable. Lesions never overlap (a pixel belongs to the first
        lesion that has it, so every instance is exported whole) and empty ones are dropped."""
        new, taken = [], np.zeros(self.shape, bool)
        for m in lesions:
            m = np.asarray(m, bool) & ~taken
            if m.any():
                new.append(m)
                taken |= m
        if len(new) == len(self.lesions) and all(np.array_equal(a, b) for a, b in zip(new, self.lesions)):
            return
        self.undo_stack.append(self.lesions)
        del self.undo_stack[:-MAX_HISTORY]
        self.redo_stack.clear()
        self.lesions = new
        self.active = min(self.active, len(self.lesions))
        if not keep_prompt:
            self._forget_prompt()

    def set_active(self, mask: np.ndarray, keep_prompt: bool = True) -> None:
        """The active lesion's mask becomes ``mask`` (a new lesion if the active one is new), less the pixels of
        the other lesions: a box drawn over a neighbour never takes it over."""
        lesions = list(self.lesions)
        others = np.zeros(self.shape, bool)
        for k, m in enumerate(lesions):
            if k != self.active:
                others |= m
        mask = np.asarray(mask, bool) & ~others
        if self.active < len(lesions):
            lesions[self.active] = mask
        else:
            lesions.append(mask)
        active = self.active
        self.replace(lesions, keep_prompt=keep_prompt)
        self.active = min(active, len(self.lesions))

    def new_lesion(self) -> None:
        """The next prompt or stroke draws another lesion."""
        self.active = len(self.lesions)
        self._forget_prompt()

    def select(self, index: int) -> None:
        self.active = max(0, min(int(index), len(self.lesions)))
        self._forget_prompt()

    def remove_active(self) -> None:
        if self.active < len(self.lesions):
            self.replace([m for k, m in enumerate(self.lesions) if k != self.active])

    def clear(self) -> None:
        self.replace([])
        self.active = 0

    def _step(self, source: list, target: list) -> bool:
        """Undo (from the undo stack to the redo stack) or redo (the other way)."""
        if not source:
            return False
        target.append(self.lesions)
        self.lesions = source.pop()
        self.active = min(self.active, len(self.lesions))
        self._forget_prompt()
        return True

    def undo(self) -> bool:
        return self._step(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._step(self.redo_stack, self.undo_stack)
