"""What each ATen operation does to the labels of its tensors' axes (``discover.py`` drives it).

Each ``h_*`` rule returns the output's labels (a list per tensor output) after constraining its
inputs' labels through the tracer (union, fix, fresh). The rules live by op family in
``rules_layers`` (weights, matrix products, attention, recurrent layers), ``rules_shape`` (views,
splits, concatenation) and ``rules_pointwise`` (entry-wise ops, norms, reductions, pooling).
``HANDLERS`` maps ATen op names to rules. A rule may raise on argument forms it does not know;
the tracer then treats the op as unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx

from .labels import NORM_OPS
from .rules_layers import RNN_GATES, UNIFORM_OPS, LayerRules
from .rules_pointwise import PointwiseRules
from .rules_shape import ShapeRules


class OpRules(LayerRules, ShapeRules, PointwiseRules):
    """Mix-in of the tracer: one method per family of ATen operations."""


def handler_table() -> dict[str, Callable[[Any, fx.Node], Any]]:
    """ATen op name (with or without overload) -> rule."""
    t = OpRules
    groups: dict[Callable[[Any, fx.Node], Any], str] = {
        t.h_linear: "linear",
        t.h_conv: "conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d "
                  "conv_transpose3d",
        t.h_norm: " ".join(sorted(NORM_OPS)),
        t.h_prelu: "prelu _prelu_kernel",
        t.h_elementwise: "add sub mul div rsub maximum minimum max.other min.other pow where "
                         "masked_fill eq ne lt le gt ge logical_and logical_or bitwise_and bitwise_or "
                         "addcmul addcdiv lerp fmod remainder atan2 copy floor_divide true_divide "
                         "relu relu_ gelu gelu_ sigmoid tanh silu silu_ leaky_relu hardtanh hardtanh_ "
                         "elu selu celu softplus mish hardswish hardsigmoid relu6 dropout "
                         "feature_dropout alpha_dropout native_dropout clone contiguous alias detach "
                         "lift_fresh lift_fresh_copy _to_copy to abs neg exp log log1p expm1 sqrt "
                         "rsqrt reciprocal square sin cos erf sign clamp clamp_min clamp_max softmax "
                         "_softmax log_softmax _log_softmax logical_not round floor ceil trunc "
                         "nan_to_num fill _safe_softmax",
        t.h_like: "type_as rand_like randn_like",
        t.h_uniform: " ".join(sorted(UNIFORM_OPS)),
        t.h_getitem: "getitem",
        t.h_reduce: "mean sum amax amin var std prod logsumexp linalg_vector_norm norm any all "
                    "max.dim min.dim max.default min.default argmax argmin count_nonzero",
        t.h_pool: "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d "
                  "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d "
                  "_adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
                  "max_pool2d_with_indices max_pool3d_with_indices upsample_nearest1d "
                  "upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d "
                  "upsample_linear1d _upsample_nearest_exact2d",
        t.h_reshape: "view reshape _unsafe_view _reshape_alias view_copy flatten unflatten squeeze "
                     "unsqueeze view_as reshape_as",
        t.h_expand: "expand expand_as broadcast_to expand_copy",
        t.h_transpose: "transpose swapaxes swapdims permute t numpy_T movedim",
        t.h_matmul: "mm bmm matmul addmm baddbmm addmv mv dot",
        t.h_attention: "scaled_dot_product_attention",
        t.h_embedding: "embedding",
        t.h_rnn: " ".join(RNN_GATES),
        t.h_cat: "cat concat concatenate stack",
        t.h_split: "split split_with_sizes chunk unbind tensor_split",
        t.h_slice: "slice narrow select",
        t.h_pad: "constant_pad_nd pad",
        t.h_reorder: "flip roll",
    }
    return {name: fn for fn, names in groups.items() for name in names.split()}


HANDLERS = handler_table()
