#!/usr/bin/env python3
"""The PyTorch side of bench-train_step: transformers LlamaForCausalLM +
PEFT LoRA in eager mode on the CPU, the same folder, batch and threads.
Prints `loss0 <first-step loss>` and `step_s <seconds per step>`."""
import argparse
import time

import h5py
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch", required=True)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rank", type=int, default=8)
a = ap.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
with h5py.File(a.batch, "r") as f:
    ids = torch.tensor(f["/input_ids"][...], dtype=torch.long)
    mask = torch.tensor(f["/attention_mask"][...], dtype=torch.long)
    labels = torch.tensor(f["/labels"][...], dtype=torch.long)
model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation="eager")
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, target_modules=targets,
                                         lora_dropout=0.0, task_type="CAUSAL_LM"))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-3)
t0 = None
for s in range(a.steps + 1):
    if s == 1:
        t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    if s == 0:
        print("loss0 %.6f" % out.loss.item(), flush=True)
print("step_s %.6f" % ((time.perf_counter() - t0) / a.steps))
