"""Label rules for ops that carry weights or mix features: linear, conv, matmul, attention,
embedding and recurrent layers (LSTM, GRU, plain RNN).

A weight's output axis opens a new space and its input axis joins the features it reads; a
matrix product joins the contracted axes. GPT-2's ``Conv1D`` is ``addmm(b, x, W)`` with W stored
(in, out): a layer with a transposed weight. Recurrent layers stack their gates on the rows of
both weights (tiles: each hidden unit owns one row per gate) and read their own hidden state.
"""

from __future__ import annotations

from typing import Any

from torch import fx

from .labels import Param, RawLayer, arg_of, op_names, shape_of

RNN_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
UNIFORM_OPS = {"zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_full", "new_empty",
               "zeros_like", "ones_like", "empty_like", "full_like", "scalar_tensor"}


class LayerRules:
    """Mix-in of the tracer (``discover._Tracer``): rules for weight-carrying and mixing ops."""

    def h_linear(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = arg_of(node, "bias")
        xl, wl = self.lab(x), self.lab(w)
        self.union(wl[1], xl[-1], "linear")
        if isinstance(bias, fx.Node):
            self.union(self.lab(bias)[0], wl[0], "linear bias")
        self.add_layer(node, "linear", self.key_of(w), self.key_of(bias), wl[0], wl[1])
        return list(xl[:-1]) + [wl[0]]

    def h_conv(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = arg_of(node, "bias")
        full, op = op_names(node.target)
        transposed = bool(arg_of(node, "transposed", False)) or "transpose" in op
        groups = int(arg_of(node, "groups", 1))
        xl, wl = self.lab(x), self.lab(w)
        xs, ws, os_ = shape_of(x.meta["val"]), shape_of(w.meta["val"]), shape_of(node.meta["val"])
        k = len(ws) - 2
        c = len(xs) - k - 1
        inp = wl[0] if transposed else wl[1]
        if groups == 1:
            self.union(inp, xl[c], full)
            out = wl[1] if transposed else wl[0]
        elif not transposed and groups == xs[c]:
            # depthwise: output channel c*m+j reads only input channel c: same space, block m
            node_id, block, tiles = self.resolve(xl[c])
            out, inp = (node_id, block * (ws[0] // groups), tiles), xl[c]
            self.union(wl[0], out, full)
        else:
            why = f"grouped convolution (groups={groups})"
            self.fix(xl[c], why, full)
            out, inp = self.fresh(os_[c], why), xl[c]
            self.union(wl[0], xl[c] if transposed else out, full)
        if isinstance(bias, fx.Node):
            self.union(self.lab(bias)[0], out, full)
        kind = f"conv_transpose{k}d" if transposed else f"conv{k}d"
        self.add_layer(node, kind, self.key_of(w), self.key_of(bias), out, inp, tuple(ws[2:]))
        return (list(xl[:c]) + [out]
                + [self.fresh(s, "spatial positions") for s in os_[c + 1:]])

    def h_matmul(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        args = list(node.args)
        bias = args.pop(0) if op.startswith(("addmm", "baddbmm", "addmv", "addbmm")) else None
        a, b = args[0], args[1]
        al, bl = self.lab(a), self.lab(b)
        as_, bs = shape_of(a.meta["val"]), shape_of(b.meta["val"])
        os_ = shape_of(node.meta["val"])
        if len(as_) == 1 and len(bs) == 1:
            self.union(al[0], bl[0], full)
            out: list = []
        elif len(bs) == 1:
            self.union(al[-1], bl[0], full)
            out = list(al[:-1])
        elif len(as_) == 1:
            self.union(al[0], bl[-2], full)
            out = list(bl[:-2]) + [bl[-1]]
        else:
            self.union(al[-1], bl[-2], full)
            batch = self.broadcast([(al[:-2], as_[:-2]), (bl[:-2], bs[:-2])], os_[:-2], full)
            out = batch + [al[-2], bl[-1]]
        self.matmul_layer(node, bl, bias)
        if isinstance(bias, fx.Node):
            out = self.broadcast([(out, os_), (self.lab(bias), shape_of(bias.meta["val"]))], os_, full)
        return out

    def matmul_layer(self, node: fx.Node, bl: list, bias: Any) -> None:
        """x @ W.T (+ b) is a decomposed linear layer (W.T may have been expanded for a bmm);
        x @ W (+ b) with a 2-D parameter W is a linear layer whose weight is stored (in, out),
        as GPT-2's Conv1D does."""
        if len(bl) < 2 or not isinstance(bl[-1], Param):
            return
        key = bl[-1].key
        if len(self.state_shapes[key]) != 2:
            return
        if bl[-1] == Param(key, 0) and bl[-2] == Param(key, 1):
            self.add_layer(node, "linear", key, self.key_of(bias), bl[-1], bl[-2])
        elif len(bl) == 2 and bl[-1] == Param(key, 1) and bl[-2] == Param(key, 0):
            self.add_layer(node, "linear", key, self.key_of(bias), bl[-1], bl[-2], transposed=True)

    def h_attention(self, node: fx.Node) -> Any:
        """scaled_dot_product_attention, including grouped-query attention (fewer K/V heads)."""
        q, k, v = node.args[:3]
        ql, kl, vl = list(self.lab(q)), list(self.lab(k)), list(self.lab(v))
        qs, ks, vs = (shape_of(t.meta["val"]) for t in (q, k, v))
        self.union(ql[-1], kl[-1], "attention scores")
        self.union(kl[-2], vl[-2], "attention values")
        if len(qs) >= 3 and qs[-3] != ks[-3] and ks[-3] > 0 and qs[-3] % ks[-3] == 0:
            # grouped-query attention: query head h reads key/value head h // rep, so query
            # heads move in groups of rep with their shared key/value head
            rep = qs[-3] // ks[-3]
            for other in (kl, vl):
                node_id, block, tiles = self.resolve(other[-3])
                self.union(ql[-3], (node_id, block * rep, tiles), "grouped-query attention")
            kl[-3], vl[-3] = ql[-3], ql[-3]
            ks, vs = (*ks[:-3], qs[-3], *ks[-2:]), (*vs[:-3], qs[-3], *vs[-2:])
        batch = self.broadcast([(ql[:-2], qs[:-2]), (kl[:-2], ks[:-2]), (vl[:-2], vs[:-2])],
                               shape_of(node.meta["val"])[:-2], "attention")
        mask = arg_of(node, "attn_mask")
        if isinstance(mask, fx.Node):
            scores = batch + [ql[-2], kl[-2]]
            self.broadcast([(scores, (*qs[:-1], ks[-2])), (self.lab(mask), shape_of(mask.meta["val"]))],
                           (*qs[:-1], ks[-2]), "attention mask")
        return batch + [ql[-2], vl[-1]]

    def recurrent_layer(self, node: fx.Node, kind: str, layers: int, layer: int,
                        ps: list) -> None:
        """Layer ``layer`` of a recurrent module as a weight layer (its input weight and bias;
        graph.recurrent names the tensors that ride with it), named after the module, with
        ".l<k>" when the module stacks several layers."""
        key = self.key_of(ps[0])
        if key is None or any(lay.weight == key for lay in self.layers):
            return
        module = key.rsplit(".", 1)[0] if "." in key else key
        name = f"{module}.l{layer}" if layers > 1 else module
        bias = self.key_of(ps[2]) if len(ps) > 2 else None
        wl = self.lab(ps[0])
        self.layers.append(RawLayer(name, kind, key, bias, node, wl[0], wl[1], ()))

    def h_embedding(self, node: fx.Node) -> Any:
        w, idx = node.args[0], node.args[1]
        wl = self.lab(w)
        self.fix(wl[0], "embedding rows (indexed by token ids)")
        return list(self.lab(idx)) + [wl[1]]

    def h_rnn(self, node: fx.Node) -> Any:
        """aten.lstm / gru / rnn_tanh / rnn_relu (input form): one hidden space per layer.

        Both directions of a bidirectional layer share its space (their outputs are
        concatenated). A non-zero initial state, or a final state that is used, ties all layers
        to one space (the states of all layers are stacked on one axis).
        """
        full, op = op_names(node.target)
        gates = RNN_GATES[op]
        x, hx, params = node.args[0], node.args[1], list(node.args[2])
        has_biases, layers = bool(node.args[3]), int(node.args[4])
        bidirectional = bool(node.args[7])
        dirs = 2 if bidirectional else 1
        per = 4 if has_biases else 2
        if len(params) != layers * dirs * per:
            raise ValueError("projections (proj_size) are not supported")
        xl = self.lab(x)
        hidden = shape_of(params[1].meta["val"])[1]
        spaces = [self.g.new(hidden, None) for _ in range(layers)]
        inp = xl[-1]
        for layer in range(layers):
            h = spaces[layer]
            for d in range(dirs):
                ps = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
                if d == 0:
                    self.recurrent_layer(node, op, layers, layer, ps)
                self.union(self.lab(ps[0])[0], (h, 1, gates), full)
                self.union(self.lab(ps[0])[1], inp, full)
                self.union(self.lab(ps[1])[0], (h, 1, gates), full)
                self.union(self.lab(ps[1])[1], (h, 1, 1), full)
                for b in ps[2:]:
                    self.union(self.lab(b)[0], (h, 1, gates), full)
            inp = (h, 1, dirs)
        states = [hx] if isinstance(hx, fx.Node) else list(hx)
        uniform = all(op_names(s.target)[1] in UNIFORM_OPS for s in states
                      if isinstance(s, fx.Node) and s.op == "call_function")
        used = any(u.args[1] != 0 and u.users for u in node.users if u.op == "call_function")
        if layers * dirs > 1 and (used or not uniform):
            for h in spaces[1:]:
                self.union((spaces[0], 1, 1), (h, 1, 1), full)
        if layers * dirs == 1 or used or not uniform:
            for s in states:
                if isinstance(s, fx.Node):
                    self.union(self.lab(s)[-1], (spaces[0], 1, 1), full)
        out = list(xl[:-1]) + [inp]
        extra = [[self.fresh(s, "recurrent layer index") for s in shape_of(val)[:-1]]
                 + [(spaces[0], 1, 1)] for val in node.meta["val"][1:]]
        return tuple([out] + extra)
