"""Loading real pretrained backbones offline (vlmlab.backbones.real) from tiny checkpoints saved in the formats real
ones come in: weights round-trip, tokenizer adaptation, VisionEncoder shapes, LLaVA on a world batch through the
real (BPE) tokenizer, clear errors, no remote code, no network."""
from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlmlab.archs import build
from vlmlab.backbones.real import load_real_backbones, save_mae_decoder, save_tiny_checkpoints
from vlmlab.backbones.vision import MAEDecoder
from vlmlab.train import set_trainable
from vlmlab.world import IMG, World


def _no_network(*args, **kwargs):
    raise OSError("network access attempted in an offline test")


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """Hub offline (env and the constant huggingface_hub read at import), empty caches, sockets refuse to connect."""
    import huggingface_hub.constants as hub

    empty = tmp_path_factory.mktemp("empty-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(empty))
        mp.setattr(hub, "HF_HUB_OFFLINE", True)
        mp.setattr(hub, "HF_HUB_CACHE", str(empty))
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket.socket, "connect_ex", _no_network)
        yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoints(tmp_path_factory.mktemp("tiny-ckpt"))


@pytest.fixture(scope="module")
def real(ckpt):
    return load_real_backbones(ckpt["lm"], ckpt["cl"], ckpt["mim"], ckpt["mae_decoder"], mim_args=ckpt["mim_args"])


def _assert_state_equal(module_state: dict, saved: dict):
    assert set(saved) <= set(module_state), set(saved) - set(module_state)
    for k, v in saved.items():
        assert torch.equal(module_state[k], v), k


def test_weights_equal_the_saved_ones(real, ckpt):
    from pathlib import Path

    saved_lm = load_file(str(Path(ckpt["lm"]) / "model.safetensors"))
    state = real.lm.state_dict()
    n_new = len(real.tokenizer) - saved_lm["model.embed_tokens.weight"].shape[0]
    assert n_new == 2  # <img> and <pad> were added, and the tables grew by exactly that
    for k, v in saved_lm.items():
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            assert state[k].shape[0] == v.shape[0] + n_new
            assert torch.equal(state[k][: v.shape[0]], v), k
        else:
            assert torch.equal(state[k], v), k
    _assert_state_equal(real.cl.vit.state_dict(), load_file(str(Path(ckpt["cl"]) / "model.safetensors")))
    _assert_state_equal(real.mim.vit.state_dict(), load_file(ckpt["mim_file"]))
    _assert_state_equal(real.mim_decoder.state_dict(), load_file(ckpt["mae_decoder"]))
    assert real.paths["mim"].endswith("mim.safetensors") and real.paths["cl"] == ckpt["cl"]


def test_name_at_directory_form(ckpt):
    """``"<timm name>@<directory>"``: timm picks the weights file in the directory; the name + args give the shape."""
    from pathlib import Path

    from vlmlab.backbones.real import load_vit

    enc, source = load_vit(f"vit_tiny_patch16_224@{ckpt['cl']}", "cl",
                           dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2))
    _assert_state_equal(enc.vit.state_dict(), load_file(str(Path(ckpt["cl"]) / "model.safetensors")))
    assert source.startswith("vit_tiny_patch16_224@") and enc.grid == 4


def test_tokenizer_gains_img_and_pad(real, ckpt):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(ckpt["lm"], trust_remote_code=False)
    assert len(raw(IMG, add_special_tokens=False)["input_ids"]) > 1 and raw.pad_token is None  # a real gap to fill
    tok = real.tokenizer
    img = tok.convert_tokens_to_ids(IMG)
    assert img is not None and img >= len(raw)
    ids = tok(f"image : {IMG} question : what color", add_special_tokens=False)["input_ids"]
    assert ids.count(img) == 1
    assert IMG in tok.all_special_tokens
    assert tok.pad_token is not None and tok.pad_token_id not in (tok.bos_token_id, tok.eos_token_id)
    assert real.lm.config.pad_token_id == tok.pad_token_id
    assert real.lm.get_input_embeddings().num_embeddings == len(tok) == real.lm.lm_head.out_features


def test_adapt_tokenizer_fills_bos_and_leaves_a_ready_tokenizer_alone():
    """No BOS (Qwen/GPT-style): EOS stands in, as World.encode starts sequences with bos_token_id; a tokenizer that
    already has <img> and pad (the world's own) is unchanged, and a large enough embedding table is not resized."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from vlmlab.backbones.real import adapt_tokenizer

    def lm(vocab):
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=2))

    world = World(seed=0)
    core = Tokenizer.from_str(world.tokenizer.backend_tokenizer.to_str())
    no_bos = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    n0 = len(no_bos)
    m = lm(n0 + 8)  # padded table, as many real LMs have
    assert no_bos.bos_token is None and no_bos.pad_token is None
    assert adapt_tokenizer(no_bos, m) == 0  # <pad> is in the vocabulary already: it becomes the pad token, no new row
    assert no_bos.pad_token_id == world.tokenizer.pad_token_id
    assert no_bos.bos_token_id == no_bos.eos_token_id
    assert m.get_input_embeddings().num_embeddings == n0 + 8
    ready = world.tokenizer
    m = lm(len(ready))
    assert adapt_tokenizer(ready, m) == 0 and m.get_input_embeddings().num_embeddings == len(ready)


def test_vision_encoders_shapes_and_normalisation(real):
    from timm.data import IMAGENET_INCEPTION_MEAN, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    px = torch.rand(2, 3, 64, 64)  # world images: resized to each ViT's own input size
    cl = real.cl
    assert (cl.img_size, cl.vit.patch_embed.patch_size[0], cl.grid, cl.dim, cl.depth) == (32, 8, 4, 32, 2)
    assert torch.allclose(cl.mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN))  # from the checkpoint's config.json
    assert torch.allclose(cl.std.flatten(), torch.tensor(OPENAI_CLIP_STD))
    outs = cl(px, layers=[-1, -2])
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32), (2, 16, 32)]
    assert not torch.equal(outs[0], outs[1])
    assert torch.allclose(real.mim.mean.flatten(), torch.tensor(IMAGENET_INCEPTION_MEAN))  # vit_tiny's registry cfg
    mim = real.mim
    assert (mim.img_size, mim.grid, real.patch) == (64, 4, 16)
    tokens, ids_restore, mask = mim.encode_masked(px, real.mae_mask_ratio)
    assert tokens.shape == (2, 1 + 4, 32) and ids_restore.shape == (2, 16) and mask.sum(1).tolist() == [12, 12]
    assert real.mim_decoder(tokens, ids_restore).shape == (2, 16, 16 * 16 * 3)


def test_images_are_preprocessed_as_each_vit_was_trained(real):
    """Mean, std and the resize interpolation come from timm's data config of each checkpoint (no centre crop:
    a scene fills its canvas)."""
    import torch.nn.functional as F
    from timm.data import resolve_model_data_config

    for enc in (real.cl, real.mim):
        cfg = resolve_model_data_config(enc.vit)
        assert enc.interpolation == cfg["interpolation"]
        assert torch.allclose(enc.mean.flatten(), torch.tensor(cfg["mean"]))
    cl = real.cl
    assert cl.interpolation == "bicubic"  # vit CLIP configs resize bicubic
    px = torch.rand(2, 3, 64, 64)
    want = F.interpolate(px, size=(cl.img_size,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(cl.prepare(px), (want - cl.mean) / cl.std)


def test_llava_trains_on_a_world_batch_with_the_real_tokenizer(real, smoke_budget):
    world = World(seed=0, tokenizer=real.tokenizer)
    img = real.tokenizer.convert_tokens_to_ids(IMG)
    batch = world.batch("qa", "train", 0, 4)
    assert ((batch["input_ids"] == img).sum(1) == 1).all()
    assert batch["input_ids"].max() < len(real.tokenizer)
    assert (batch["input_ids"][:, 0] == real.tokenizer.bos_token_id).all()
    m = build("llava", real, smoke_budget)
    st = m.stages()[1]  # instruct: connector and LLM learn
    set_trainable(m, st.trainable)
    out = m.forward(batch)
    assert out["logits"].shape[-1] == len(real.tokenizer)
    assert int(out["visual_mask"].sum(1).unique()) == real.cl.grid ** 2
    loss = m.next_token_loss(out["logits"], out["labels"])
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.connector.parameters())
    assert m.lm.get_input_embeddings().weight.grad is not None
    assert all(p.grad is None for p in m.vision.parameters())
    mim_llava = build("llava", real, smoke_budget, {"encoder": "mim"})  # the MIM ViT (64 px, patch 16) also plugs in
    assert mim_llava.answer_logits(batch).shape == (4, len(real.tokenizer))


def test_mim_is_optional(ckpt, smoke_budget):
    bb = load_real_backbones(ckpt["lm"], ckpt["cl"])
    assert bb.mim is None and bb.mim_decoder is None and bb.patch == 8
    bb.to("cpu")
    assert build("llava", bb, smoke_budget) is not None
    with pytest.raises(ValueError, match="mae_decoder"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], mae_decoder=ckpt["mae_decoder"])


def test_missing_paths_name_the_argument(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lm='/nonexistent/lm'"):
        load_real_backbones("/nonexistent/lm", ckpt["cl"])
    with pytest.raises(FileNotFoundError, match=r"cl='/nonexistent/vit'"):
        load_real_backbones(ckpt["lm"], "/nonexistent/vit")
    with pytest.raises(FileNotFoundError, match=r"mim='vit_tiny_patch16_224@/nonexistent.safetensors'"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], "vit_tiny_patch16_224@/nonexistent.safetensors")
    with pytest.raises(FileNotFoundError, match=r"mae_decoder='/nonexistent/dec.safetensors'"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], ckpt["mim"], "/nonexistent/dec.safetensors",
                            mim_args=ckpt["mim_args"])
    with pytest.raises(ValueError, match=r"cl=.*weights file without an architecture.*@"):
        load_real_backbones(ckpt["lm"], ckpt["mim_file"])
    with pytest.raises(FileNotFoundError, match=r"cl=.*no timm config.json"):
        load_real_backbones(ckpt["lm"], str(tmp_path))
    with pytest.raises(ValueError, match=r"mim='not_a_vit@.*not a timm model name"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], f"not_a_vit@{ckpt['mim_file']}")
    with pytest.raises(ValueError, match=r"cl='not_a_vit' is neither"):
        load_real_backbones(ckpt["lm"], "not_a_vit")
    # hub names cannot be fetched offline (empty caches): the error names the argument
    with pytest.raises(OSError, match=r"cl='test_vit.r160_in1k': could not fetch"):
        load_real_backbones(ckpt["lm"], "test_vit.r160_in1k")
    with pytest.raises(OSError, match=r"lm='some-org/some-llm'"):
        load_real_backbones("some-org/some-llm", ckpt["cl"])


def test_checkpoint_lacking_weights_is_refused(ckpt, tmp_path):
    """timm drops the classifier and then loads non-strictly; a missing block weight must still be an error."""
    sd = load_file(ckpt["mim_file"])
    del sd["blocks.1.mlp.fc2.weight"]
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"mim=.*blocks\.1\.mlp\.fc2\.weight"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], f"vit_tiny_patch16_224@{tmp_path / 'broken.safetensors'}",
                            mim_args=ckpt["mim_args"])
    with pytest.raises(ValueError, match=r"mim=.*"):  # wrong architecture args: shapes do not fit
        load_real_backbones(ckpt["lm"], ckpt["cl"], ckpt["mim"], mim_args=dict(ckpt["mim_args"], embed_dim=64))


def test_vit_with_register_tokens_is_refused(ckpt, tmp_path):
    from timm.models import save_for_hf

    save_for_hf(_reg_vit(), str(tmp_path / "reg"), safe_serialization=True)
    with pytest.raises(ValueError, match=r"cl=.*register tokens"):
        load_real_backbones(ckpt["lm"], str(tmp_path / "reg"))


def _reg_vit():
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=1, num_heads=2, num_classes=0, reg_tokens=4, no_embed_class=True)


def test_remote_code_is_never_run(ckpt, tmp_path):
    """transformers with trust_remote_code=False: an ``auto_map`` next to a known model_type is ignored (the
    built-in class loads, the repository's code never runs); with an unknown model_type it refuses to load."""
    from transformers import LlamaForCausalLM

    ran = tmp_path / "REMOTE_CODE_RAN"
    evil = f"import pathlib\npathlib.Path({str(ran)!r}).write_text('x')\nraise RuntimeError('remote code ran')\n"
    for model_type in ("llama", "evil_llama"):
        d = tmp_path / model_type
        shutil.copytree(ckpt["lm"], d)
        for f in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py"):
            (d / f).write_text(evil)
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_type"] = model_type
        cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                           "AutoModelForCausalLM": "modeling_evil.EvilLM"}
        (d / "config.json").write_text(json.dumps(cfg))
        tcfg = json.loads((d / "tokenizer_config.json").read_text())
        tcfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTok", None]}
        (d / "tokenizer_config.json").write_text(json.dumps(tcfg))
    bb = load_real_backbones(str(tmp_path / "llama"), ckpt["cl"])
    assert type(bb.lm) is LlamaForCausalLM
    with pytest.raises(ValueError, match=r"(?s)lm=.*custom code.*trust_remote_code"):
        load_real_backbones(str(tmp_path / "evil_llama"), ckpt["cl"])
    assert not ran.exists()


def test_official_mae_checkpoint_with_decoder(ckpt, tmp_path):
    """A FAIR MAE checkpoint ({'model': encoder + decoder_* + mask_token}, .pth) serves as both mim and mae_decoder;
    the decoder's position table is resampled when the encoder is resized."""
    enc = load_file(ckpt["mim_file"])
    dec = MAEDecoder(32, 32, 2, 2, 16, 16 * 16 * 3)
    official = dict(enc)
    names = {"embed.": "decoder_embed.", "blocks.": "decoder_blocks.", "norm.": "decoder_norm.",
             "head.": "decoder_pred."}
    for k, v in dec.state_dict().items():
        if k == "mask_token":
            official[k] = v
        elif k == "pos":
            official["decoder_pos_embed"] = v
        else:
            new = next(n + k[len(o):] for o, n in names.items() if k.startswith(o))
            official[new] = v
    path = tmp_path / "mae_visualize_tiny.pth"
    torch.save({"model": official}, path)
    (tmp_path / "mae_visualize_tiny.json").write_text(json.dumps({"heads": 2}))  # weights cannot tell the heads
    spec = f"vit_tiny_patch16_224@{path}"
    bb = load_real_backbones(ckpt["lm"], ckpt["cl"], spec, str(path), mim_args=ckpt["mim_args"])
    _assert_state_equal(bb.mim.vit.state_dict(), enc)
    _assert_state_equal(bb.mim_decoder.state_dict(), dec.state_dict())
    assert bb.mim_decoder.blocks[0].attn.num_heads == 2
    small = load_real_backbones(ckpt["lm"], ckpt["cl"], spec, str(path), mim_args=dict(ckpt["mim_args"], img_size=32))
    assert small.mim.grid == 2 and small.mim_decoder.pos.shape == (1, 1 + 4, 32)
    tokens, ids_restore, _ = small.mim.encode_masked(torch.rand(1, 3, 64, 64), 0.5)
    assert small.mim_decoder(tokens, ids_restore).shape == (1, 4, 16 * 16 * 3)


def test_mae_decoder_dims_must_fit_the_mim(ckpt, tmp_path):
    p = save_mae_decoder(MAEDecoder(48, 32, 1, 2, 16, 16 * 16 * 3), tmp_path / "wide")
    with pytest.raises(ValueError, match=r"mae_decoder=.*48-d"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], ckpt["mim"], str(p), mim_args=ckpt["mim_args"])
    save_file(load_file(str(p)), str(tmp_path / "nodims.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"mae_decoder=.*dimensions"):
        load_real_backbones(ckpt["lm"], ckpt["cl"], ckpt["mim"], str(tmp_path / "nodims.safetensors"),
                            mim_args=ckpt["mim_args"])
