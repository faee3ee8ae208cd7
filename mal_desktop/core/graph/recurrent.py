"""The tensors of one recurrent layer besides its input weight and bias.

Discovery lists an LSTM / GRU / RNN layer ``k`` of a module with the weight
``<module>.weight_ih_l<k>`` and the bias ``<module>.bias_ih_l<k>`` (torch's names, also those of
a .pt2 program's state). Its hidden units also own the rows of the recurrent weight
``weight_hh_l<k>`` (and its columns), the recurrent bias, and every tensor of the reverse
direction of a bidirectional layer: they all move with the layer's output map.
"""

from __future__ import annotations

import re
from collections.abc import Collection

RECURRENT_KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_WEIGHT = re.compile(r"^(?P<prefix>.*?)weight_ih_l(?P<layer>\d+)$")
_ROLES = ("weight_hh", "bias_hh", "weight_ih_reverse", "weight_hh_reverse", "bias_ih_reverse",
          "bias_hh_reverse")


def recurrent_riders(weight: str, keys: Collection[str]) -> dict[str, str]:
    """role -> state key of the tensors riding with the recurrent layer whose input weight is
    ``weight`` ("weight_hh", "bias_hh" and, for a bidirectional layer, "weight_ih_reverse",
    ...), among ``keys``; empty when ``weight`` is not named like a recurrent input weight."""
    found = _WEIGHT.match(weight)
    if found is None:
        return {}
    prefix, layer = found["prefix"], found["layer"]
    out = {}
    for role in _ROLES:
        base, reverse = role.removesuffix("_reverse"), role.endswith("_reverse")
        key = f"{prefix}{base}_l{layer}" + ("_reverse" if reverse else "")
        if key in keys:
            out[role] = key
    return out
