"""Which model class and config each checkpoint kind is, and loading one from its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from flam.models.checkpoint import config_from_dict, load_weights, read_header
from flam.models.flam import FLAM, FLAMConfig
from flam.models.monolithic import Monolithic, MonolithicConfig
from flam.models.tokenizer import Tokenizer, TokenizerConfig

KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "tokenizer": (TokenizerConfig, Tokenizer),
    "flam": (FLAMConfig, FLAM),
    "monolithic": (MonolithicConfig, Monolithic),
}
LAM_KINDS = ("flam", "monolithic")


def build_model(kind: str, config: Any) -> nn.Module:
    """A freshly initialised model of a kind from its config."""
    return KINDS[kind][1](config)


def load_model(folder: Path, kinds: tuple[str, ...]) -> tuple[nn.Module, dict[str, Any]]:
    """Model (in eval mode) and header of a checkpoint folder whose kind is one of `kinds`."""
    header = read_header(folder, kinds)
    config_cls, model_cls = KINDS[header["kind"]]
    model = model_cls(config_from_dict(config_cls, header["config"]))
    load_weights(model, folder)
    return model.eval(), header
