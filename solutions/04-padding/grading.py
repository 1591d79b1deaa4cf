"""Assignment 04's authoritative checks: one part per graded cell, on inputs drawn at grading time.

Read by ``scripts/grade`` (see ``attnlab_grader.authority``); never released to learners.
Drivers are sent to the sandbox as source, so each is self-contained. Expected values come
from the same driver run on the reference solution (the source notebook's own cells).
"""

import torch

from attnlab_grader.authority import Case, Part

CHARS = "abcdefghijklmnopqrstuvwxyz .,!?"
LAYER_WIDTH = 16


# ------------------------------------------------------------------------ the driver (runs in the sandbox)


def drive(learner, inputs):
    """Run one check (``inputs["check"]``) of the learner's functions; return plain data.

    Every call of a learner's function is watched (``sys.setprofile``) for the package functions
    the task forbids in the answers; the first one seen is reported under "forbidden function
    called". The package's own code that the checks run around the learner's (generation, the
    layer, the attention functions fed to the checker) is not watched.
    """
    import math
    import sys

    import attnlab
    import torch.nn.functional as F

    watched = {attnlab.padding_mask.__code__: "attnlab.padding_mask",
               attnlab.attention_mask_for.__code__: "attnlab.attention_mask_for",
               attnlab.position_ids.__code__: "attnlab.position_ids",
               attnlab.CharTokenizer.__call__.__code__: "attnlab.CharTokenizer's padding"}
    used = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in watched and watched[frame.f_code] not in used:
            used.append(watched[frame.f_code])

    def yours(name):
        function = learner[name]

        def call(*args, **kwargs):
            sys.setprofile(profile)
            if sys.getprofile() is not profile:
                used.append("(the grader's watch was switched off)")
            try:
                return function(*args, **kwargs)
            finally:
                sys.setprofile(None)
        return call

    def refusal(function, args):
        try:
            yours(function)(*args)
        except ValueError as error:
            message = str(error)
            named = all(any(spelling in message for spelling in group) for group in inputs["names"])
            return {"raises ValueError": True, "its message names " + inputs["what"]: named}
        return {"raises ValueError": False, "its message names " + inputs["what"]: False}

    def left_pad():
        sequences = inputs["sequences"]
        copies = [list(s) for s in sequences if isinstance(s, list)]
        result = yours("left_pad")(sequences, pad_id=inputs["pad_id"])
        ids, mask = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        lists_after = [list(s) for s in sequences if isinstance(s, list)]
        return {"input_ids": ids, "attention_mask": mask, "the caller's lists unchanged": lists_after == copies}

    def generation():
        tok = attnlab.CharTokenizer(inputs["chars"])
        torch.manual_seed(inputs["seed"])
        config = attnlab.LlamaConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)
        model = attnlab.LlamaLM(config).eval()
        ids, mask = yours("left_pad")([tok.encode(p) for p in inputs["prompts"]], pad_id=tok.pad_id)
        return {"generated tokens": attnlab.generate(model, ids, mask, max_new_tokens=inputs["new_tokens"])}

    def positions():
        return {"position ids": yours("position_ids")(inputs["attention_mask"])}

    def positions_kind():
        got = yours("position_ids")(inputs["attention_mask"])
        if type(got) is not torch.Tensor:
            return {"type": type(got).__name__, "shape": None, "dtype": None}
        return {"type": "Tensor", "shape": tuple(got.shape), "dtype": got.dtype}

    def mask():
        args = (inputs["attention_mask"],) if inputs["T"] is None else (inputs["attention_mask"], inputs["T"])
        return {"mask": yours("padded_causal_mask")(*args)}

    def layer():
        """The notebook's one-head layer with learned absolute positions, on the learner's three pieces:
        for each sequence, the batch output at its real positions (the last L columns)."""
        sequences = inputs["sequences"]
        ids, attention_mask = yours("left_pad")([list(seq) for seq in sequences])  # a copy: see the layout part
        position = yours("position_ids")(attention_mask)
        attn_mask = yours("padded_causal_mask")(attention_mask)
        with torch.no_grad():
            x = F.embedding(ids, inputs["tokens"]) + F.embedding(position, inputs["positions"])  # (B, S, C)
            q, k, v = ((x @ w)[:, None] for w in inputs["w_qkv"])  # (B, S, C) -> (B, 1, S, C): one head
            out = attnlab.scaled_dot_product_attention(q, k, v, attn_mask)[0][:, 0]  # (B, S, C)
        S = out.shape[1]
        return {"outputs at the real positions": [out[b, S - len(seq):] for b, seq in enumerate(sequences)],
                "finite everywhere": bool(torch.isfinite(out).all())}

    def own_code():
        """Every function once, on small inputs: only the watch decides (errors cost other parts)."""
        mask = torch.tensor([[0, 0, 1], [1, 1, 1]])
        for name, args in (("left_pad", ([[5, 6, 7], [8]],)), ("position_ids", (mask,)), ("padded_causal_mask", (mask,)),
                           ("padded_causal_mask", (mask, 1)),
                           ("batch_vs_alone", (attnlab.scaled_dot_product_attention, [3, 1, 2]))):
            try:
                yours(name)(*args)
            except NotImplementedError:
                raise
            except Exception:
                pass
        return {}

    def checker():
        """Feed the learner's checker correct and broken attention functions; say which it tells apart.

        A correct attention must score below the dtype's tolerance; a broken one above ten times it;
        one with NaN or inf in a pad query row must score inf. The localised flaws change only the
        padded batch (B > 1), never a sequence run alone, and only in one place each.
        """
        check = yours("batch_vs_alone")
        lengths, seed, row, pos = list(inputs["lengths"]), inputs["seed"], inputs["row"], inputs["pos"]
        tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
        sdpa = attnlab.scaled_dot_product_attention

        def scores(q, k):
            return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])

        def finfo_min(q, k, v, attn_mask):  # a finite fill: pad rows uniform, meaningless but harmless
            w = torch.softmax(scores(q, k).masked_fill(~attn_mask, torch.finfo(q.dtype).min), dim=-1)
            return w @ v, w

        def torch_sdpa(q, k, v, attn_mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), None

        def ignores_mask(q, k, v, attn_mask):
            return sdpa(q, k, v)

        def causal_only(q, k, v, attn_mask):  # is_causal=True instead of the pad mask
            return F.scaled_dot_product_attention(q, k, v, is_causal=True), None

        def after_softmax(q, k, v, attn_mask):
            w = torch.softmax(scores(q, k), dim=-1).masked_fill(~attn_mask, 0.0)
            return w @ v, w

        def nan_rows(q, k, v, attn_mask):  # -inf then torch.softmax: NaN in the pad query rows
            w = torch.softmax(scores(q, k).masked_fill(~attn_mask, float("-inf")), dim=-1)
            return w @ v, w

        def flawed(kind, where=None):
            def attend(q, k, v, attn_mask):
                out, w = sdpa(q, k, v, attn_mask)
                batch, decoding = q.shape[0] > 1, q.shape[-2] < k.shape[-2]
                out = out.clone()
                if kind == "row" and batch:
                    out[where] += 1.0
                elif kind == "position" and batch and not decoding:
                    out[where[0], :, where[1]] += 1.0
                elif kind == "dtype" and batch and q.dtype == where:
                    out += 1.0
                elif kind == "sign" and batch and not decoding:
                    out -= 1.0
                elif kind == "decoding" and batch and decoding:
                    out[where, ..., 0] -= 1.0
                elif kind == "inf" and batch:
                    out = out.masked_fill(~attn_mask.any(-1, keepdim=True), float("inf"))
                elif kind == "nan when decoding" and batch and decoding:
                    out[where] = float("nan")
                elif kind == "alone in float32" and not batch and q.dtype == torch.float32:
                    out += 1.0
                return out, w
            return attend

        def score(attend, dtype, seed=seed):  # with a right padded_causal_mask: a wrong one costs Task 3 only
            kept = learner["padded_causal_mask"]
            learner["padded_causal_mask"] = right_mask
            try:
                return check(attend, list(lengths), dtype=dtype, seed=seed)
            finally:
                learner["padded_causal_mask"] = kept

        said = {}
        if inputs["family"] == "whole":
            first = score(sdpa, torch.float32)
            said["returns a Python float"] = isinstance(first, float) and not isinstance(first, bool)
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                name = str(dtype).replace("torch.", "")
                said[f"passes the package's attention in {name}"] = score(sdpa, dtype) < tol[dtype]
                said[f"passes a finite finfo.min fill in {name}"] = score(finfo_min, dtype) < tol[dtype]
                said[f"flags is_causal=True without the pad mask in {name}"] = score(causal_only, dtype) > 10 * tol[dtype]
                said[f"returns inf for NaN in the pad query rows in {name}"] = score(nan_rows, dtype) == float("inf")
            said["passes PyTorch's attention"] = score(torch_sdpa, torch.float32) < tol[torch.float32]
            said["flags an attention that ignores the mask"] = score(ignores_mask, torch.float32) > 1e-4
            said["flags masking after the softmax"] = score(after_softmax, torch.float32) > 1e-4
            first, again, other = (score(ignores_mask, torch.float32, s) for s in (seed, seed, seed + 1))
            said["gives the same result twice for one seed, and another for another seed"] = first == again != other
        else:
            dtype = inputs["dtype"]
            flaws = {
                f"flags an attention wrong only in batch row {row}": flawed("row", row),
                f"flags an attention wrong only at position {pos} of batch row {row}": flawed("position", (row, pos)),
                "flags an output too small by 1 in the prefill (take the absolute difference)": flawed("sign"),
                f"flags an attention wrong only when decoding (T = 1), in one channel of row {row}": flawed("decoding", row),
            }
            for name, attend in flaws.items():
                said[name] = score(attend, dtype) > 10 * tol[dtype]
            said["returns inf for inf (not NaN) in the pad query rows"] = score(flawed("inf"), dtype) == float("inf")
            said[f"returns inf for NaN in row {row} of the decoding step"] = (
                score(flawed("nan when decoding", row), dtype) == float("inf"))
            wrong = inputs["wrong_dtype"]
            said[f"flags an attention wrong only in {wrong} (run every call in dtype)"] = (
                score(flawed("dtype", wrong), wrong) > 10 * tol[wrong])
            said[f"passes an attention wrong only in {wrong} when called in float32"] = (
                score(flawed("dtype", wrong), torch.float32) < tol[torch.float32])
            said[f"passes an attention wrong only for sequences alone in float32 when called in {wrong}"] = (
                score(flawed("alone in float32"), wrong) < tol[wrong])
        return said

    def right_mask(attention_mask, T=None):  # the task's mask, written here: a wrong one costs Task 3 only
        S = attention_mask.shape[-1]
        T = S if T is None else T
        return (attention_mask != 0)[:, None, None, :] & torch.ones(T, S, dtype=torch.bool).tril(S - T)

    checks = {"left_pad": left_pad, "generation": generation, "positions": positions, "positions kind": positions_kind,
              "mask": mask, "layer": layer, "own code": own_code, "checker": checker}
    if inputs["check"] == "refusal":
        said = refusal(inputs["function"], inputs["args"])
    else:
        said = checks[inputs["check"]]()
    said["forbidden function called"] = used[0] if used else "none"
    return said


# ------------------------------------------------------------------------ cases (drawn from the secret seed)


def draw(g, low, high):
    return int(torch.randint(low, high, (1,), generator=g))


def random_real(g, B, S, side):
    """A (B, S) bool mask of real tokens: left- or right-padded, or with gaps anywhere."""
    cols = torch.arange(S)[None, :]
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    if side == "left":
        return cols >= S - lengths[:, None]
    if side == "right":
        return cols < lengths[:, None]
    return torch.rand(B, S, generator=g) < 0.6


def left_pad_parts(g):
    layout = []
    for _ in range(6):
        lengths = [draw(g, 1, 9) for _ in range(draw(g, 2, 6))]
        lengths[draw(g, 0, len(lengths))] = max(lengths) + 1  # at least one row with pads
        sequences = [torch.randint(3, 40, (L,), generator=g).tolist() for L in lengths]
        layout.append(Case(drive, {"check": "left_pad", "sequences": sequences, "pad_id": draw(g, 0, 3)},
                           label=f"lists of lengths {lengths}"))
    same = [torch.randint(3, 40, (4,), generator=g).tolist() for _ in range(3)]
    layout.append(Case(drive, {"check": "left_pad", "sequences": same, "pad_id": 0}, label="three sequences of equal length"))
    layout.append(Case(drive, {"check": "left_pad", "sequences": [[draw(g, 3, 40)]], "pad_id": 1}, label="one sequence of one token"))
    tensors = [torch.randint(3, 40, (L,), generator=g) for L in (draw(g, 1, 5), draw(g, 5, 9))]
    layout.append(Case(drive, {"check": "left_pad", "sequences": tensors, "pad_id": 0}, label="1-D tensors as sequences"))

    generation = []
    for _ in range(2):
        prompts = ["".join(CHARS[int(i)] for i in torch.randint(0, len(CHARS), (draw(g, 1, 13),), generator=g))
                   for _ in range(draw(g, 2, 5))]
        prompts[0] = prompts[0] + "ab"  # lengths differ: at least one row has pads
        generation.append(Case(drive, {"check": "generation", "chars": CHARS, "prompts": prompts,
                                                           "seed": draw(g, 0, 10_000), "new_tokens": 6},
                               label=f"greedy generation from the prompts {prompts}"))

    empty_at = draw(g, 1, 4)
    batch = [torch.randint(3, 40, (draw(g, 1, 5),), generator=g).tolist() for _ in range(empty_at)]
    errors = [
        Case(drive, {"check": "refusal", "function": "left_pad", "args": [[]], "what": "the batch", "names": [["batch"]]},
             label="an empty batch"),
        Case(drive, {"check": "refusal", "function": "left_pad", "args": [batch + [[]]], "what": f"the index {empty_at}",
                             "names": [[str(empty_at)]]}, label=f"sequence {empty_at} is empty"),
    ]
    return [
        Part("test_left_pad_layout", layout),
        Part("test_left_pad_generation", generation),
        Part("test_left_pad_errors", errors),
    ]


def position_ids_parts(g):
    values, kinds = [], []
    for n in range(9):
        B, S, side = draw(g, 1, 6), draw(g, 1, 12), ["left", "right", "gaps"][n % 3]
        real = random_real(g, B, S, side)
        if n == 2:
            real[0] = False  # a row of only pads
        mask = [real.long(), real, real.int()][n % 3]
        values.append(Case(drive, {"check": "positions", "attention_mask": mask}, exact_dtype=False,
                           label=f"a {side}-padded {tuple(mask.shape)} {mask.dtype} mask"))
    for dtype in (torch.long, torch.int32, torch.bool, torch.uint8):
        real = random_real(g, draw(g, 1, 5), draw(g, 2, 9), "left")
        kinds.append(Case(drive, {"check": "positions kind", "attention_mask": real.to(dtype)},
                          label=f"a {dtype} mask: the result must be a torch.long tensor; the mask must not change"))
    errors = []
    for bad_value in (2, -1):
        mask = torch.ones(draw(g, 1, 4), draw(g, 3, 8), dtype=torch.long)
        mask[0, draw(g, 0, mask.shape[1])] = bad_value
        errors.append(Case(drive, {"check": "refusal", "function": "position_ids", "args": [mask], "what": "the bad value",
                                           "names": [[str(bad_value)]]}, label=f"a mask holding {bad_value}"))
    for shape in ((draw(g, 3, 9),), (2, draw(g, 2, 5), 3)):
        errors.append(Case(drive, {"check": "refusal", "function": "position_ids", "args": [torch.ones(shape, dtype=torch.long)],
                                           "what": "the shape", "names": [[str(shape), str(list(shape))]]},
                           label=f"a mask of shape {shape}"))
    return [
        Part("test_position_ids_values", values),
        Part("test_position_ids_inputs", kinds),
        Part("test_position_ids_errors", errors),
    ]


def padded_mask_parts(g):
    square, decode = [], []
    for n in range(6):
        B, S, side = draw(g, 1, 6), draw(g, 1, 10), ["left", "right", "gaps"][n % 3]
        real = random_real(g, B, S, side)
        mask = real.long() if n % 2 == 0 else real
        square.append(Case(drive, {"check": "mask", "attention_mask": mask, "T": None},
                           label=f"a {side}-padded {tuple(mask.shape)} {mask.dtype} mask, T=None"))
    for n in range(6):
        B, S, side = draw(g, 1, 6), draw(g, 2, 10), ["left", "gaps"][n % 2]
        T = [1, draw(g, 1, S), S][n % 3]
        real = random_real(g, B, S, side)
        mask = real.long() if n % 2 == 0 else real
        decode.append(Case(drive, {"check": "mask", "attention_mask": mask, "T": T}, exact_dtype=False,
                           label=f"a {side}-padded {tuple(mask.shape)} mask, T={T} queries"))
    errors = []
    for S, T in ((draw(g, 3, 6), draw(g, 7, 10)), (draw(g, 2, 5), draw(g, 6, 10))):  # digits that differ
        errors.append(Case(drive, {"check": "refusal", "function": "padded_causal_mask",
                                           "args": [torch.ones(2, S, dtype=torch.long), T], "what": "T and S",
                                           "names": [[str(T)], [str(S)]]}, label=f"T={T} queries over S={S} positions"))
    layer = []
    for _ in range(3):
        lengths = [draw(g, 1, 12) for _ in range(draw(g, 2, 6))]
        lengths[0] = 12
        sequences = [torch.randint(3, 40, (L,), generator=g).tolist() for L in lengths]
        C = LAYER_WIDTH
        layer.append(Case(drive, {"check": "layer", 
            "sequences": sequences, "tokens": torch.randn(40, C, generator=g),
            "positions": torch.randn(16, C, generator=g), "w_qkv": [torch.randn(C, C, generator=g) / 4 for _ in range(3)],
        }, exact_dtype=False, label=f"a layer with learned absolute positions, sequences of lengths {lengths}"))
    return [
        Part("test_padded_mask_square", square),
        Part("test_padded_mask_decode", decode),
        Part("test_padded_mask_errors", errors),
        Part("test_padded_layer_equals_alone", layer),
    ]


def checker_parts(g):
    whole, localised = [], []
    for _ in range(2):
        B = draw(g, 2, 6)
        lengths = [draw(g, 1, 10) for _ in range(B)]
        lengths[0], lengths[1] = max(lengths) + 2, 1  # pad rows, and a row of one token
        whole.append(Case(drive, {"check": "checker", "family": "whole", "lengths": lengths, "seed": draw(g, 0, 1000),
                                                 "row": 0, "pos": 0}, label=f"lengths {lengths}"))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        B = draw(g, 3, 6)
        lengths = [draw(g, 2, 10) for _ in range(B)]
        lengths[0] = max(lengths) + 1  # the longest row first: every other row has pads
        row = draw(g, 1, B)
        pos = max(lengths) - lengths[row] + draw(g, 0, lengths[row] - 1)  # a real position, not the last
        wrong = [torch.float16, torch.bfloat16][draw(g, 0, 2)]
        localised.append(Case(drive, {"check": "checker", 
            "family": "localised", "lengths": lengths, "seed": draw(g, 0, 1000), "row": row, "pos": pos,
            "dtype": dtype, "wrong_dtype": wrong}, label=f"lengths {lengths}, dtype {dtype}"))
    return [
        Part("test_batch_vs_alone", whole),
        Part("test_batch_vs_alone_localised", localised),
        Part("test_own_code", [Case(drive, {"check": "own code"}, label="your four functions, each called once")]),
    ]


def parts(generator):
    return left_pad_parts(generator) + position_ids_parts(generator) + padded_mask_parts(generator) \
        + checker_parts(generator)
