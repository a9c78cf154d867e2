#!/usr/bin/env python3
"""The model engine against Hugging Face transformers + PEFT, in float32.

    .venv-ref/bin/python tools/reference/hf_llama_check.py \\
        --peso-model build/peso-model [--workdir DIR] [--keep]

For each of two tiny random Llama configs (A: grouped-query attention,
llama3 rope scaling, tied embeddings; B: untied head, multi-query
attention, head_dim != hidden/heads, a rope whose scaling also takes the
smooth band) this script

  1. builds transformers' LlamaForCausalLM from a fixed torch seed (weights
     drawn wider than the default 0.02 so attention is peaked and a wrong
     rope or mask shows; RMSNorm weights random too) and saves the folder
     with save_pretrained(safe_serialization=True) (peso-model's loss and
     logits read no tokenizer, so the folder has none);
  2. wraps it with PEFT LoRA (r 4, alpha 8, all seven projections, no
     dropout), sets every lora_B to random values so that every lora_A gets
     a gradient, and saves the adapter with save_pretrained;
  3. writes a batch of 3 right-padded rows to an HDF5 file (/input_ids,
     /attention_mask, /labels, int32 [B, T]); labels are -100 except the
     last 4 real tokens of each row, in transformers' convention (labels[t]
     is predicted at position t-1);
  4. computes transformers' loss, the logits of row 0 alone (with and
     without the adapter), and the gradient of the loss for every lora_A /
     lora_B, keyed by the names PEFT saves
     (base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight);
  5. runs
        peso-model loss --model M --adapter AD --batch B.h5 --grads-out G.safetensors
        peso-model logits --model M [--adapter AD] --ids 1,2,... --out L.safetensors
     and compares: relative error of a tensor = max|ours - hf| / max(max|hf|, 1e-30)
     (of the loss: |ours - hf| / |hf|); every one must be within 1e-4;
  6. loads the gradient file peso-model wrote (PEFT keys, written by
     peso's adapter writer) as the weights of a PEFT adapter folder and
     checks PEFT sees exactly its values;
  7. has peso write a whole adapter folder,
        peso-model adapter --model M --out PD --b-init normal --b-std 0.1 --seed 5 [--rank --alpha --targets]
     (A: the defaults r 8, alpha 16, all seven projections; B: r 3, alpha 5,
     q,k,down), loads it with PeftModel.from_pretrained and checks that PEFT
     reports no missing or unexpected keys, holds exactly the file's values,
     reads back r, lora_alpha, target_modules and scaling = alpha / r, and
     gives peso-model logits --adapter PD's logits on the 3 batch rows
     within 1e-4 (the adapter must change them: B is random). Beside these,
     'init:' rows compare peso's A with PEFT's own fresh Kaiming-uniform A
     (the bound 1/sqrt(in) and the variance) and B's std with 0.1.

It also checks the reference itself before using it: the saved folders
reload in transformers + PEFT with identical logits, gradient names equal
the saved keys, no gradient is all zero, float32 agrees with float64 far
inside the tolerance (the noise floor), and the configs are sensitive to
what they test (dropping the llama3 scaling, or in B moving
low_freq_factor by 2%, changes the logits by over 100x the tolerance).

Prints a table of every compared quantity, the worst relative error and a
'N passed, N failed' line; exits 0 only if all pass. --hf-only stops
before running peso-model (to check the reference alone).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import h5py
import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

TOL = 1e-4
TINY = 1e-30
LORA_R, LORA_ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PESO_TIMEOUT_S = 300
N_LABELS = 4  # like the recommender: the target item's 4 code tokens

CONFIGS = {
    "A": dict(
        vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, intermediate_size=96,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        tie_word_embeddings=True, seed=1234, lengths=[60, 51, 37],
        peso_adapter=dict(args=[], r=8, alpha=16, targets=TARGETS),
    ),
    # rope_theta 10000 with head_dim 16 puts two frequencies (wavelengths
    # 19.9 and 62.8) inside the smooth band (16, 64) of this scaling.
    "B": dict(
        vocab_size=232, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, intermediate_size=80,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        tie_word_embeddings=False, seed=4321, lengths=[48, 64, 55], smooth_band=True,
        peso_adapter=dict(args=["--rank", "3", "--alpha", "5", "--targets", "q,k,down"], r=3, alpha=5,
                          targets=["q_proj", "k_proj", "down_proj"]),
    ),
}
INIT_STD = 0.2  # wide enough that attention scores have spread ~ 1..3
PESO_ADAPTER_SEED, PESO_B_STD = 5, 0.1
INIT_TOL = 0.05  # sampling noise of a variance over ~10^3..10^4 draws is ~1-3%
NORM_JITTER = 0.1


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return float("inf")  # callers that can say more check shapes first
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), TINY))


def build_config(spec):
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "rope_theta",
            "rope_scaling", "tie_word_embeddings")
    return LlamaConfig(
        **{k: spec[k] for k in keys},
        max_position_embeddings=128, rms_norm_eps=1e-5, initializer_range=INIT_STD,
        bos_token_id=1, eos_token_id=2, torch_dtype="float32",
        attn_implementation="eager",
    )


def build_model(config, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_JITTER * torch.randn_like(p))
    return model


def peft_wrap(model, seed):
    lcfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS,
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed + 1)
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    return pm.eval()


def make_batch(spec, seed):
    lengths = spec["lengths"]
    b, t = len(lengths), max(lengths)
    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(0, spec["vocab_size"], (b, t), generator=g, dtype=torch.int64)
    mask = torch.zeros(b, t, dtype=torch.int64)
    labels = torch.full((b, t), -100, dtype=torch.int64)
    for r, n in enumerate(lengths):
        ids[r, n:] = 0  # pad id; masked out and unlabeled
        mask[r, :n] = 1
        labels[r, n - N_LABELS:n] = ids[r, n - N_LABELS:n]
    return ids, mask, labels


def write_batch(path, ids, mask, labels):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.create_dataset("input_ids", data=ids.numpy().astype(np.int32))
        f.create_dataset("attention_mask", data=mask.numpy().astype(np.int32))
        f.create_dataset("labels", data=labels.numpy().astype(np.int32))
    os.replace(tmp, path)


def saved_key(param_name):
    """PEFT's in-memory name -> the key save_pretrained writes."""
    return param_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def hf_reference(pm, ids, mask, labels):
    pm.zero_grad(set_to_none=True)
    out = pm(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {saved_key(n): p.grad.detach().clone()
             for n, p in pm.named_parameters() if p.requires_grad}
    n0 = int(mask[0].sum())
    with torch.no_grad():
        logits0 = pm(input_ids=ids[:1, :n0]).logits[0]
        with pm.disable_adapter():
            base0 = pm(input_ids=ids[:1, :n0]).logits[0]
    return float(out.loss.detach()), out.logits.detach(), logits0, base0, grads


class Report:
    def __init__(self):
        self.rows = []
        self.failed = []

    def add(self, cfg, what, err, tol=TOL, kind="agree"):
        ok = err <= tol if kind == "agree" else err > tol
        self.rows.append((cfg, what, err, tol, kind, ok))
        if not ok:
            self.failed.append(f"{cfg} {what}")

    def tensor(self, cfg, what, ours, ref):
        if tuple(ours.shape) != tuple(ref.shape):
            self.fail(cfg, what, f"shape {list(ours.shape)}, expected {list(ref.shape)}")
        else:
            self.add(cfg, what, rel_err(ours, ref))

    def fail(self, cfg, what, why):
        self.rows.append((cfg, what, float("nan"), 0.0, why, False))
        self.failed.append(f"{cfg} {what}: {why}")

    def print(self):
        w = max([len(r[1]) for r in self.rows] + [10])
        print(f"{'cfg':<4}{'quantity':<{w + 2}}{'rel.err':>11}  {'needs':<10}result")
        for cfg, what, err, tol, kind, ok in self.rows:
            need = {"agree": f"<= {tol:.0e}", "differ": f">  {tol:.0e}"}.get(kind, "-")
            print(f"{cfg:<4}{what:<{w + 2}}{err:>11.3e}  {need:<10}{'ok' if ok else 'FAIL'}")


def self_checks(rep, name, spec, model_dir, adapter_dir, pm, ids, mask, labels, ref):
    _, logits, logits0, _, grads = ref
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    if set(saved) != set(grads):
        rep.fail(name, "adapter keys", f"saved {len(saved)} keys, {len(grads)} gradients, names differ")
    n_expect = spec["num_hidden_layers"] * len(TARGETS) * 2
    if len(grads) != n_expect:
        rep.fail(name, "adapter keys", f"{len(grads)} LoRA tensors, expected {n_expect}")
    zero = [k for k, g in grads.items() if float(g.abs().max()) == 0.0]
    if zero:
        rep.fail(name, "gradients", f"{len(zero)} are all zero, e.g. {zero[0]}")
    n0 = int(mask[0].sum())
    rep.add(name, "hf: row 0 alone = batched", rel_err(logits0, logits[0, :n0]), tol=1e-5)

    base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                            attn_implementation="eager").eval()
    reloaded = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, attention_mask=mask).logits
    rep.add(name, "hf: saved folders reload", rel_err(again, logits), tol=0.0)

    d = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                         attn_implementation="eager"), adapter_dir, is_trainable=True).double()
    _, logits64, _, _, grads64 = hf_reference(d, ids, mask, labels)
    worst = max([rel_err(logits, logits64)] + [rel_err(grads[k], grads64[k]) for k in grads])
    rep.add(name, "hf: float32 vs float64 (noise floor)", worst, tol=TOL / 10)

    real = mask.bool()
    for what, scaling in sensitivity_variants(spec):
        rep.add(name, "sensitivity: " + what, rel_err(variant_logits(spec, pm, scaling, ids, mask)[real],
                                                      logits[real]), tol=100 * TOL, kind="differ")


def sensitivity_variants(spec):
    """Rope changes the config must notice far beyond the tolerance."""
    out = [("no llama3 scaling", None)]
    if spec.get("smooth_band"):
        out.append(("low_freq_factor x1.02", dict(spec["rope_scaling"],
                                                  low_freq_factor=1.02 * spec["rope_scaling"]["low_freq_factor"])))
    return out


def variant_logits(spec, pm, scaling, ids, mask):
    """pm's weights (the rotary inv_freq is a buffer, not saved) under another rope scaling."""
    cfg = build_config(spec)
    cfg.rope_scaling = scaling
    other = peft_wrap(build_model(cfg, spec["seed"]), spec["seed"])
    other.load_state_dict(pm.state_dict())
    with torch.no_grad():
        return other(input_ids=ids, attention_mask=mask).logits


def run_peso(cmd):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=PESO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(cmd)}: no answer in {PESO_TIMEOUT_S} s") from None
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}\n{res.stdout}{res.stderr}")
    return res.stdout


def parse_loss(stdout, cmd):
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines or not lines[-1].startswith("loss "):
        raise RuntimeError(f"{cmd}: last line is not 'loss <value>':\n{stdout}")
    return float(lines[-1].split()[1])


def peft_reads_back(model_dir, adapter_dir, weights, out_dir):
    """Worst error of PEFT's view of a weights file peso wrote (the
    gradients, written by the same PEFT-keyed writer as adapters), loaded
    as an adapter with PEFT's own adapter_config.json."""
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(adapter_dir, "adapter_config.json"), out_dir)
    shutil.copy(weights, os.path.join(out_dir, "adapter_model.safetensors"))
    base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    pm = PeftModel.from_pretrained(base, out_dir)
    loaded = {saved_key(n): p.detach() for n, p in pm.named_parameters() if ".lora_" in n}
    want = load_file(weights)
    if set(loaded) != set(want):
        return float("inf")
    return max(rel_err(loaded[k], want[k]) for k in want)


def compare_peso(rep, name, peso, work, model_dir, adapter_dir, ids, mask, ref):
    loss, _, logits0, base0, grads = ref
    batch = os.path.join(work, "batch.h5")
    gpath = os.path.join(work, "grads.safetensors")
    lpath = os.path.join(work, "logits.safetensors")
    cmd = [peso, "loss", "--model", model_dir, "--adapter", adapter_dir, "--batch", batch, "--grads-out", gpath]
    try:
        ours = parse_loss(run_peso(cmd), "peso-model loss")
        rep.add(name, "loss", abs(ours - loss) / max(abs(loss), TINY))
        got = load_file(gpath)
        missing = sorted(set(grads) - set(got))
        extra = sorted(set(got) - set(grads))
        if missing or extra:
            rep.fail(name, "gradient keys", f"missing {missing[:3]}, unexpected {extra[:3]}")
        for k in sorted(grads):
            if k in got:
                rep.tensor(name, "grad " + k.replace("base_model.model.model.", ""), got[k], grads[k])
        rep.add(name, "peft loads peso's adapter weights file",
                peft_reads_back(model_dir, adapter_dir, gpath, os.path.join(work, "adapter-from-peso")), tol=0.0)
    except RuntimeError as e:
        rep.fail(name, "loss + gradients", str(e))
    n0 = int(mask[0].sum())
    ids0 = ",".join(str(int(i)) for i in ids[0, :n0])
    for what, adapter, want in (("logits", adapter_dir, logits0), ("base logits (no adapter)", None, base0)):
        cmd = [peso, "logits", "--model", model_dir] + (["--adapter", adapter] if adapter else [])
        cmd += ["--ids", ids0, "--out", lpath]
        try:
            run_peso(cmd)
            got = load_file(lpath)
            if "logits" not in got:
                rep.fail(name, what, f"{lpath} has no tensor 'logits' (keys {sorted(got)})")
            else:
                rep.tensor(name, f"{what} [{n0}, {want.shape[1]}]", got["logits"], want)
        except RuntimeError as e:
            rep.fail(name, what, str(e))


def load_peft_strict(rep, name, model_dir, adapter_dir):
    """PeftModel.from_pretrained(base, adapter_dir), failing rows for any
    key PEFT reports missing (its warning) or unexpected (the load result
    of load_adapter, which from_pretrained drops)."""
    base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, adapter_dir).eval()
        missing = [str(w.message) for w in caught if "missing" in str(w.message).lower()]
        probe = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager"),
            adapter_dir)
        res = probe.load_adapter(adapter_dir, adapter_name="probe")
    what = "peso adapter: peft loads it, no missing/unexpected keys"
    if missing:
        rep.fail(name, what, missing[0][:200])
    elif res.missing_keys or res.unexpected_keys:
        rep.fail(name, what, f"load_adapter: missing {res.missing_keys[:3]}, unexpected {res.unexpected_keys[:3]}")
    else:
        rep.add(name, what, 0.0, tol=0.0)
    return pm


def check_adapter_config(rep, name, pm, adapter_dir, model_dir, want):
    """The fields PEFT reads, as PEFT parsed them, and the scaling it uses."""
    cfg = pm.peft_config["default"]
    got = dict(r=cfg.r, alpha=cfg.lora_alpha, targets=sorted(cfg.target_modules))
    exp = dict(r=want["r"], alpha=want["alpha"], targets=sorted(want["targets"]))
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        base = json.load(f).get("base_model_name_or_path")
    scalings = {m.scaling["default"] for m in pm.modules() if hasattr(m, "scaling") and "default" in m.scaling}
    if got != exp or base != model_dir:
        rep.fail(name, "peso adapter: config r, lora_alpha, target_modules",
                 f"peft read {got} base {base!r}, expected {exp} base {model_dir!r}")
    elif scalings != {want["alpha"] / want["r"]}:
        rep.fail(name, "peso adapter: config r, lora_alpha, target_modules",
                 f"peft scalings {sorted(scalings)}, expected {want['alpha'] / want['r']}")
    else:
        rep.add(name, "peso adapter: config r, lora_alpha, target_modules", 0.0, tol=0.0)


def check_weights_held(rep, name, pm, adapter_dir, spec):
    """PEFT's LoRA parameters are exactly the file's, key for key."""
    held = {saved_key(n): p.detach() for n, p in pm.named_parameters() if ".lora_" in n}
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    n_expect = spec["num_hidden_layers"] * len(spec["peso_adapter"]["targets"]) * 2
    if set(held) != set(saved) or len(saved) != n_expect:
        rep.fail(name, "peso adapter: peft holds the file's tensors",
                 f"{len(saved)} in the file, {len(held)} in peft, expected {n_expect}; "
                 f"only in file {sorted(set(saved) - set(held))[:2]}, only in peft {sorted(set(held) - set(saved))[:2]}")
        return saved
    rep.add(name, "peso adapter: peft holds the file's tensors",
            max(rel_err(held[k], saved[k]) for k in saved), tol=0.0)
    return saved


def check_init_stats(rep, name, spec, model_dir, saved):
    """peso's A against PEFT's own fresh init of the same adapter shape,
    and B's std against --b-std. Rows start with 'init:' (statistics,
    not peso-vs-transformers errors)."""
    want = spec["peso_adapter"]
    base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    torch.manual_seed(spec["seed"] + 3)
    fresh = get_peft_model(base, LoraConfig(r=want["r"], lora_alpha=want["alpha"], target_modules=want["targets"],
                                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    theirs = [p.detach() for n, p in fresh.named_parameters() if ".lora_A." in n]
    ours = [t for k, t in saved.items() if ".lora_A." in k]
    scaled = lambda ts: torch.cat([(t * t.shape[1] ** 0.5).flatten().double() for t in ts])
    a_ours, a_theirs = scaled(ours), scaled(theirs)
    rep.add(name, "init: max|A|*sqrt(in), peso (PEFT bound 1)", float(a_ours.abs().max()), tol=1 + 1e-6)
    rep.add(name, "init: max|A|*sqrt(in), peft (PEFT bound 1)", float(a_theirs.abs().max()), tol=1 + 1e-6)
    rep.add(name, "init: |var A peso / var A peft - 1|", abs(float(a_ours.var() / a_theirs.var()) - 1), tol=INIT_TOL)
    b = torch.cat([t.flatten().double() for k, t in saved.items() if ".lora_B." in k])
    rep.add(name, f"init: |std B / {PESO_B_STD} - 1|", abs(float(b.std()) / PESO_B_STD - 1), tol=INIT_TOL)


def check_peso_adapter(rep, name, spec, peso, work, model_dir, ids, mask):
    """An adapter folder written by peso-model adapter, served by PEFT."""
    ad = os.path.join(work, "adapter-by-peso")
    want = spec["peso_adapter"]
    cmd = [peso, "adapter", "--model", model_dir, "--out", ad, "--b-init", "normal", "--b-std", str(PESO_B_STD),
           "--seed", str(PESO_ADAPTER_SEED)] + want["args"]
    try:
        run_peso(cmd)
    except RuntimeError as e:
        rep.fail(name, "peso adapter", str(e))
        return
    pm = load_peft_strict(rep, name, model_dir, ad)
    check_adapter_config(rep, name, pm, ad, model_dir, want)
    saved = check_weights_held(rep, name, pm, ad, spec)
    check_init_stats(rep, name, spec, model_dir, saved)
    lpath = os.path.join(work, "logits-peso-adapter.safetensors")
    for r, n in enumerate(int(x) for x in mask.sum(dim=1)):
        with torch.no_grad():
            want_logits = pm(input_ids=ids[r:r + 1, :n]).logits[0]
            if r == 0:
                with pm.disable_adapter():
                    base_logits = pm(input_ids=ids[r:r + 1, :n]).logits[0]
                rep.add(name, "peso adapter: changes the logits (B random)", rel_err(want_logits, base_logits),
                        tol=100 * TOL, kind="differ")
        what = f"peso adapter in peft: logits row {r} [{n}, {want_logits.shape[1]}]"
        try:
            run_peso([peso, "logits", "--model", model_dir, "--adapter", ad,
                      "--ids", ",".join(str(int(i)) for i in ids[r, :n]), "--out", lpath])
            rep.tensor(name, what, load_file(lpath)["logits"], want_logits)
        except (RuntimeError, KeyError) as e:
            rep.fail(name, what, str(e))


def check_config(rep, name, spec, work, peso):
    model_dir = os.path.join(work, "model")
    adapter_dir = os.path.join(work, "adapter")
    config = build_config(spec)
    model = build_model(config, spec["seed"])
    model.save_pretrained(model_dir, safe_serialization=True)
    pm = peft_wrap(model, spec["seed"])
    pm.save_pretrained(adapter_dir, safe_serialization=True, save_embedding_layers=False)
    ids, mask, labels = make_batch(spec, spec["seed"])
    write_batch(os.path.join(work, "batch.h5"), ids, mask, labels)
    ref = hf_reference(pm, ids, mask, labels)
    self_checks(rep, name, spec, model_dir, adapter_dir, pm, ids, mask, labels, ref)
    if peso:
        compare_peso(rep, name, peso, work, model_dir, adapter_dir, ids, mask, ref)
        check_peso_adapter(rep, name, spec, peso, work, model_dir, ids, mask)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peso-model", help="path to the peso-model binary")
    ap.add_argument("--hf-only", action="store_true", help="build and check the reference only")
    ap.add_argument("--workdir", help="where to write the folders, left in place (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = ap.parse_args()
    if not args.hf_only and not args.peso_model:
        ap.error("--peso-model is required (or --hf-only)")
    peso = None if args.hf_only else os.path.abspath(args.peso_model)
    if peso and not os.access(peso, os.X_OK):
        ap.error(f"{peso}: not an executable")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="hf-llama-check-")
    os.makedirs(work, exist_ok=True)
    rep = Report()
    try:
        for name, spec in CONFIGS.items():
            sub = os.path.join(work, name)
            shutil.rmtree(sub, ignore_errors=True)
            os.makedirs(sub)
            check_config(rep, name, spec, sub, peso)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"work folder kept: {work}")
    rep.print()
    n_ok = sum(1 for r in rep.rows if r[5])
    vs_hf = [r[2] for r in rep.rows if r[4] == "agree" and not r[1].startswith(("hf:", "init:"))]
    if vs_hf:
        print(f"worst relative error of peso-model vs transformers: {max(vs_hf):.3e}")
    for f in rep.failed:
        print(f"FAILED: {f}")
    print(f"{n_ok} passed, {len(rep.rows) - n_ok} failed")
    return 0 if not rep.failed else 1


if __name__ == "__main__":
    sys.exit(main())
