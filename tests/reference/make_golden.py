#!/usr/bin/env python3
"""Write a golden model folder and golden inputs/outputs for the C++ tests.

    make_golden.py --preset sd1-tiny --seed 0 --out tests/golden/sd1-tiny
    make_golden.py --config tests/reference/configs/extra.json --seed 0 --out tests/golden/extra

Outputs (see tests/reference/README.md for every tensor name and layout):
    OUT/model/               diffusers StableDiffusionPipeline folder (save_pretrained)
    OUT/forward.safetensors  text encoder / UNet / VAE golden inputs and outputs
    OUT/train.safetensors    one DreamBooth step (prior preservation) + 3 AdamW steps

Everything runs in float32 on the CPU with deterministic algorithms, so the output depends only on
the config, the seed and the pinned package versions (tests/reference/requirements.txt).
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIP_FULL_VOCAB = 49408

# Golden prompts.  0 and 1 are the DreamBooth instance / class prompts; 2 is short (mostly padding);
# 3 is long enough to be truncated at 77 tokens even with the full 49408-token vocabulary.
PROMPTS = [
    "a photo of sks dog",
    "a photo of dog",
    "",
    "A high-resolution photograph of a small, fluffy golden retriever puppy sitting on a wooden porch "
    "at sunset, warm light, shallow depth of field, 85mm lens, bokeh, award winning, trending on "
    "artstation, highly detailed fur, soft shadows, cinematic colour grading, ultra sharp focus, "
    "photorealistic, 8k, masterpiece, by a famous photographer, in the style of National Geographic, "
    "with mountains and a lake in the background and birds flying in the sky!",
]


# --------------------------------------------------------------------------------------------------
# Tokenizer: CLIP's BPE vocabulary exactly as CLIP (open_clip SimpleTokenizer) builds it.
# --------------------------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_gz() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locate only; importing open_clip needs its deps
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: open-clip-torch is not installed (pip install --no-deps open-clip-torch==3.3.0)")
    path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        sys.exit(f"error: {path} not found")
    return path


def clip_vocab(vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    lines = gzip.open(clip_bpe_gz()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    if not 514 <= vocab_size <= CLIP_FULL_VOCAB:
        sys.exit(f"error: tokenizer vocab_size {vocab_size} must be in [514, {CLIP_FULL_VOCAB}]")
    merges = merges[: vocab_size - 514]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == vocab_size and len(set(vocab)) == vocab_size
    return vocab, merges


def build_tokenizer(tok_cfg: dict, out_dir: Path) -> CLIPTokenizer:
    vocab, merges = clip_vocab(int(tok_cfg["vocab_size"]))
    with tempfile.TemporaryDirectory() as tmp:
        vf, mf = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vf.write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
        mf.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        tok = CLIPTokenizer.from_pretrained(
            tmp, pad_token=tok_cfg["pad_token"], model_max_length=int(tok_cfg.get("model_max_length", 77))
        )
        tok.save_pretrained(out_dir)
        # transformers 5 saves only tokenizer.json + tokenizer_config.json; also ship the classic
        # vocab.json / merges.txt (what older transformers and our C++ writer produce).
        shutil.copy(vf, out_dir / "vocab.json")
        shutil.copy(mf, out_dir / "merges.txt")
    saved = CLIPTokenizer.from_pretrained(out_dir)
    assert tokenize(saved, PROMPTS).equal(tokenize(tok, PROMPTS)), "tokenizer.json and vocab/merges disagree"
    return saved


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_text_encoder(cfg: dict) -> CLIPTextModel:
    cfg = {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version")}
    return CLIPTextModel(CLIPTextConfig(**cfg))


@torch.no_grad()
def perturb(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter off its default init so golden tests see every weight.

    * weights with >= 2 dims (conv, linear, embeddings):
        nonzero default init -> p += 0.2 * std(p) * N(0,1)   (keeps the default scale)
        all-zero default     -> p  = 0.5 / sqrt(fan_in) * N(0,1)
    * 1-D parameters (biases, norm weights/biases, ...): p += 0.1 * N(0,1), so norm weights ~ 1 +- 0.1,
      biases ~ default + N(0, 0.01).
    Activations stay O(1) (make_golden prints the UNet output std; see README).
    """
    for _, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if p.dim() >= 2:
            std = p.std().item()
            if std > 0:
                p.add_(0.2 * std * noise)
            else:
                fan_in = p[0].numel()
                p.copy_(0.5 / math.sqrt(fan_in) * noise)
        else:
            p.add_(0.1 * noise)


def build_pipeline(cfg: dict, model_dir: Path, seed: int) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    unet = UNet2DConditionModel(**public(cfg["unet"]))
    vae = AutoencoderKL(**public(cfg["vae"]))
    text_encoder = build_text_encoder(cfg["text_encoder"])
    for m in (unet, vae, text_encoder):
        perturb(m, gen)
        m.eval()
    sched_cfg = cfg["scheduler"]
    sched_cls = getattr(diffusers, sched_cfg["_class_name"])
    scheduler = sched_cls.from_config(sched_cfg)

    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg["tokenizer"], model_dir / "tokenizer")
    te = cfg["text_encoder"]
    assert tokenizer.vocab_size == te["vocab_size"] == len(tokenizer), (tokenizer.vocab_size, te["vocab_size"])
    assert tokenizer.bos_token_id == te["bos_token_id"], (tokenizer.bos_token_id, te["bos_token_id"])
    assert tokenizer.eos_token_id == te["eos_token_id"], (tokenizer.eos_token_id, te["eos_token_id"])
    assert tokenizer.pad_token_id == te["pad_token_id"], (tokenizer.pad_token_id, te["pad_token_id"])
    assert tokenizer.model_max_length == te["max_position_embeddings"]

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(model_dir, safe_serialization=True)
    prefix_text_encoder_file(model_dir / "text_encoder" / "model.safetensors")
    # drop the load-time flags that transformers echoes into tokenizer_config.json
    tc_path = model_dir / "tokenizer" / "tokenizer_config.json"
    tc = {k: v for k, v in json.loads(tc_path.read_text()).items() if k not in ("is_local", "local_files_only")}
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")
    return pipe


TE_PREFIX = "text_model."


def te_key(name: str) -> str:
    """transformers 5 flattened CLIPTextModel (no `text_model` submodule) and saves keys without the
    prefix; every released SD checkpoint and transformers 4 use `text_model.<name>`.  Goldens and the
    model folder use the prefixed (on-disk, interoperable) names; transformers 5 strips it on load."""
    return name if name.startswith(TE_PREFIX) else TE_PREFIX + name


def prefix_text_encoder_file(path: Path) -> None:
    tensors = load_file(str(path))
    save_file({te_key(k): v for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def load_pipeline(model_dir: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), safety_checker=None, dtype=torch.float32)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    return pipe


# --------------------------------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------------------------------
def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(torch.int64)


@torch.no_grad()
def forward_goldens(pipe: StableDiffusionPipeline, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 100)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    out: dict[str, torch.Tensor] = {}

    ids = tokenize(tok, PROMPTS)
    assert (ids[3] != tok.pad_token_id).all() or tok.pad_token_id == tok.eos_token_id
    assert ids[3, -1] == tok.eos_token_id, "long prompt must be truncated (ends in EOS at 76)"
    out["text.input_ids"] = ids
    te_out = te(ids)
    out["text.last_hidden_state"] = te_out.last_hidden_state
    out["text.pooler_output"] = te_out.pooler_output

    c = unet.config.in_channels
    s = unet.config.sample_size
    sample = torch.randn(2, c, s, s, generator=gen)
    t = torch.tensor([10, 980], dtype=torch.int64)
    ehs = out["text.last_hidden_state"][:2].clone()
    out["unet.sample"] = sample
    out["unet.timesteps"] = t
    out["unet.encoder_hidden_states"] = ehs
    out["unet.out"] = unet(sample, t, encoder_hidden_states=ehs).sample

    H = vae.config.sample_size
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    lat = vae.config.latent_channels
    image = torch.rand(1, vae.config.in_channels, H, H, generator=gen) * 2 - 1
    moments = vae.quant_conv(vae.encoder(image)) if vae.quant_conv is not None else vae.encoder(image)
    mean, logvar = moments.chunk(2, dim=1)
    dist = vae.encode(image).latent_dist
    assert torch.equal(dist.mean, mean)
    assert torch.equal(dist.logvar, logvar.clamp(-30.0, 20.0))
    out["vae.image"] = image
    out["vae.moments"] = moments
    out["vae.logvar_clamped"] = dist.logvar
    out["vae.std"] = dist.std
    z = torch.randn(1, lat, H // f, H // f, generator=gen)
    out["vae.z"] = z
    out["vae.decoded"] = vae.decode(z).sample
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def train_goldens(pipe: StableDiffusionPipeline, seed: int, steps: int = 3,
                  step_max_numel: int = 4096) -> tuple[dict, dict]:
    """One DreamBooth step exactly as diffusers examples/dreambooth/train_dreambooth.py computes it
    (with_prior_preservation, train_text_encoder, prior_loss_weight 1.0), then `steps` AdamW steps
    on the same batch.  Returns (tensors, summary).

    Gradients of the first step are stored for every parameter.  Parameters after `steps` steps are
    stored for every text-encoder parameter and for every UNet parameter with at most
    `step_max_numel` elements (all biases, norms, attention, embeddings, conv_in/conv_out, small
    convs): that keeps the file near 2 MB; the big resnet convs are still covered by their grads and
    the update rule is elementwise.  Tests compare every step<N>.* tensor present."""
    gen = torch.Generator().manual_seed(seed + 200)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    # train_dreambooth.py: noise_scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    T = noise_scheduler.config.num_train_timesteps
    out: dict[str, torch.Tensor] = {}

    # Latents from the frozen VAE: (mean + exp(0.5 logvar) * eps) * scaling_factor.
    # Batch order: instance samples first, then class samples (B = 1 pair -> 2 samples).
    H = vae.config.sample_size
    with torch.no_grad():
        images = torch.rand(2, vae.config.in_channels, H, H, generator=gen) * 2 - 1
        dist = vae.encode(images).latent_dist
        eps = torch.randn(dist.mean.shape, generator=gen)
        latents = (dist.mean + dist.std * eps) * vae.config.scaling_factor
    out["train.images"] = images
    out["train.vae_moments"] = dist.parameters
    out["train.vae_eps"] = eps
    out["train.latents"] = latents

    noise = torch.randn(latents.shape, generator=gen)
    timesteps = torch.tensor([37, 912], dtype=torch.int64)  # distinct, one per sample
    ids = tokenize(tok, [PROMPTS[0], PROMPTS[1]])  # instance prompt, class prompt
    out["train.noise"] = noise
    out["train.timesteps"] = timesteps
    out["train.input_ids"] = ids
    out["train.alphas_cumprod"] = noise_scheduler.alphas_cumprod.to(torch.float32)

    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    ptype = noise_scheduler.config.prediction_type
    if ptype == "epsilon":
        target = noise
    elif ptype == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {ptype}")
    out["train.noisy_latents"] = noisy
    out["train.target"] = target

    unet.train()
    te.train()
    unet.requires_grad_(True)
    te.requires_grad_(True)
    vae.requires_grad_(False)
    params = list(itertools.chain(unet.parameters(), te.parameters()))
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                            foreach=False, fused=False)
    prior_loss_weight = 1.0

    def step_loss():
        ehs = te(ids)[0]
        pred = unet(noisy, timesteps, ehs, return_dict=False)[0]
        pred_i, pred_c = torch.chunk(pred, 2, dim=0)
        tgt_i, tgt_c = torch.chunk(target, 2, dim=0)
        inst = F.mse_loss(pred_i.float(), tgt_i.float(), reduction="mean")
        prior = F.mse_loss(pred_c.float(), tgt_c.float(), reduction="mean")
        return ehs, pred, inst, prior, inst + prior_loss_weight * prior

    losses, inst_losses, prior_losses, norms = [], [], [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        ehs, pred, inst, prior, loss = step_loss()
        loss.backward()
        if step == 0:
            out["train.encoder_hidden_states"] = ehs.detach().clone()
            out["train.model_pred"] = pred.detach().clone()
            out["train.loss_instance"] = inst.detach().reshape(())
            out["train.loss_prior"] = prior.detach().reshape(())
            out["train.loss"] = loss.detach().reshape(())
            for n, p in unet.named_parameters():
                out[f"grad.unet.{n}"] = p.grad.detach().clone()
            for n, p in te.named_parameters():
                out[f"grad.text_encoder.{te_key(n)}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        opt.step()
        losses.append(loss.item())
        inst_losses.append(inst.item())
        prior_losses.append(prior.item())
        norms.append(norm.item())

    out["train.step_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["train.step_losses_instance"] = torch.tensor(inst_losses, dtype=torch.float32)
    out["train.step_losses_prior"] = torch.tensor(prior_losses, dtype=torch.float32)
    out["train.step_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in unet.named_parameters():
        if p.numel() <= step_max_numel:
            out[f"step{steps}.unet.{n}"] = p.detach().clone()
    for n, p in te.named_parameters():
        out[f"step{steps}.text_encoder.{te_key(n)}"] = p.detach().clone()
    unet.eval()
    te.eval()
    summary = {"losses": losses, "grad_norms": norms, "prediction_type": ptype}
    return {k: v.detach().clone().contiguous() for k, v in out.items()}, summary


# --------------------------------------------------------------------------------------------------
def load_config(args) -> dict:
    if args.preset:
        path = REPO_ROOT / "src" / "models" / "presets" / f"{args.preset}.json"
    else:
        path = Path(args.config)
    if not path.is_file():
        sys.exit(f"error: config {path} not found")
    cfg = json.loads(path.read_text())
    for k in ("model_index", "unet", "text_encoder", "vae", "scheduler", "tokenizer"):
        if k not in cfg:
            sys.exit(f"error: {path}: missing key '{k}'")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="name of src/models/presets/NAME.json")
    g.add_argument("--config", help="JSON file with the preset layout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-train", action="store_true", help="skip train.safetensors")
    ap.add_argument("--step-max-numel", type=int, default=4096,
                    help="store step3.unet.* only for UNet parameters with at most this many elements "
                         "(0 = all); every text-encoder parameter is always stored")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    cfg = load_config(args)
    out = Path(args.out)
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    out.mkdir(parents=True, exist_ok=True)

    pipe = build_pipeline(cfg, model_dir, args.seed)
    mi = json.loads((model_dir / "model_index.json").read_text())
    for k, v in cfg["model_index"].items():
        if k.startswith("_"):
            continue
        assert mi.get(k) == v, f"model_index.json {k}: {mi.get(k)} != {v}"
    fwd = forward_goldens(pipe, args.seed)
    # (safetensors metadata maps are written in hash order; keep one key so files are byte-stable)

    # Sanity: the saved folder reloads and reproduces the outputs bit for bit.
    pipe2 = load_pipeline(model_dir)
    fwd2 = forward_goldens(pipe2, args.seed)
    for k in fwd:
        assert torch.equal(fwd[k], fwd2[k]), f"reload mismatch in {k}"
    for a, b in ((pipe.unet, pipe2.unet), (pipe.vae, pipe2.vae), (pipe.text_encoder, pipe2.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    save_file(fwd, str(out / "forward.safetensors"), metadata={"format": "pt"})
    for k in fwd:
        assert torch.isfinite(fwd[k].float()).all(), k

    print(f"[make_golden] {out}: unet.out std {fwd['unet.out'].std():.4f} "
          f"(sample std {fwd['unet.sample'].std():.4f}); text std {fwd['text.last_hidden_state'].std():.4f}; "
          f"vae.decoded std {fwd['vae.decoded'].std():.4f}; moments std {fwd['vae.moments'].std():.4f}")

    if not args.no_train:
        tr, summary = train_goldens(pipe2, args.seed, step_max_numel=args.step_max_numel or 1 << 62)
        for k in tr:
            assert torch.isfinite(tr[k].float()).all(), k
        save_file(tr, str(out / "train.safetensors"), metadata={"format": "pt"})
        print(f"[make_golden] {out}: train ({summary['prediction_type']}) losses {summary['losses']} "
              f"grad norms {summary['grad_norms']}")


if __name__ == "__main__":
    main()
