"""VAEEDOF frozen VAE: TAESD-SD3 architecture facts and both published weight formats round-trip."""
import json

import pytest
import torch

from lightning_modules.vaeedof.taesd import TinyVAE
from lightning_modules.vaeedof.weights import (
    VAEWeightsError,
    diffusers_to_taesd,
    load_lightning_vae,
    load_vae_weights,
    save_diffusers,
    save_taesd,
    taesd_to_diffusers,
)


def seeded_vae(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyVAE(**kw)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_taesd3_architecture_facts():
    vae = TinyVAE()  # SD3 variant: 16 latent channels, width 64 (NOTES.md "TAESD")
    n_enc = sum(p.numel() for p in vae.encoder.parameters())
    n_dec = sum(p.numel() for p in vae.decoder.parameters())
    assert n_enc == 1_229_456 and n_dec == 1_229_443  # "~1.23 M parameters each"
    enc, dec = vae.encoder.state_dict(), vae.decoder.state_dict()
    # TAESD .pth key layout: nn.Sequential indices, Block = conv.{0,2,4}, identity skip (no keys)
    assert tuple(enc["0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(enc["1.conv.4.weight"].shape) == (64, 64, 3, 3)
    assert "2.weight" in enc and "2.bias" not in enc  # stride-2 conv without bias
    assert tuple(enc["14.weight"].shape) == (16, 64, 3, 3) and len(vae.encoder) == 15
    assert "0.weight" not in dec and tuple(dec["1.weight"].shape) == (64, 16, 3, 3)  # index 0 = clamp
    assert "7.weight" in dec and "7.bias" not in dec  # conv after the first upsample, no bias
    assert tuple(dec["19.weight"].shape) == (3, 64, 3, 3) and len(vae.decoder) == 20
    assert not any(".skip." in k for k in list(enc) + list(dec))
    small = TinyVAE(width=8)
    z = small.encode(torch.rand(2, 3, 48, 40))
    assert z.shape == (2, 16, 6, 5)  # 8x down
    assert small.decode(z).shape == (2, 3, 48, 40)
    # the decoder's first layer soft-clamps latents to (-3, 3): tanh(x/3)*3
    assert torch.allclose(small.decoder[0](torch.tensor([0.0, 3.0, 100.0])),
                          torch.tensor([0.0, 3 * torch.tanh(torch.tensor(1.0)).item(), 3.0]))
    with pytest.raises(ValueError, match="multiples of 8"):
        small.encode(torch.rand(1, 3, 20, 16))


def test_taesd_pth_round_trip_strict(tmp_path):
    src = seeded_vae(0)
    enc, dec = save_taesd(src, tmp_path)
    assert enc.name == "taesd3_encoder.pth" and dec.name == "taesd3_decoder.pth"
    # the files are plain state dicts of the Sequential layers (TAESD's published layout)
    raw = torch.load(enc, weights_only=True)
    assert "0.weight" in raw and "1.conv.0.weight" in raw
    for path in (enc, tmp_path):  # the encoder file (decoder found beside it) or the folder
        dst = seeded_vae(1)
        assert load_vae_weights(dst, path) == "taesd"
        assert_same_weights(src, dst)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(src(x), dst(x))
    # strict: an extra key or a wrong latent width is an error naming the file
    raw["99.weight"] = torch.zeros(1)
    torch.save(raw, enc)
    with pytest.raises(VAEWeightsError, match="unexpected.*99.weight"):
        load_vae_weights(seeded_vae(1), enc)
    save_taesd(seeded_vae(0, latent_channels=4), tmp_path)
    with pytest.raises(VAEWeightsError, match="shape"):
        load_vae_weights(seeded_vae(1), enc)
    with pytest.raises(VAEWeightsError, match="no such file"):
        load_vae_weights(seeded_vae(1), tmp_path / "missing_encoder.pth")


def test_diffusers_key_mapping():
    vae = seeded_vae(0)
    d = taesd_to_diffusers(vae)
    # encoder index unchanged; decoder index shifted by one (diffusers applies the clamp outside `layers`)
    assert torch.equal(d["encoder.layers.0.weight"], vae.encoder.state_dict()["0.weight"])
    assert torch.equal(d["decoder.layers.0.weight"], vae.decoder.state_dict()["1.weight"])
    assert torch.equal(d["decoder.layers.2.conv.0.weight"], vae.decoder.state_dict()["3.conv.0.weight"])
    assert tuple(d["decoder.layers.18.weight"].shape) == (3, 64, 3, 3)
    enc, dec = diffusers_to_taesd(d)
    assert enc.keys() == vae.encoder.state_dict().keys() and dec.keys() == vae.decoder.state_dict().keys()
    with pytest.raises(VAEWeightsError, match="unexpected diffusers"):
        diffusers_to_taesd({"quant_conv.weight": torch.zeros(1)})


def _diffusers_round_trip(tmp_path, fmt):
    src = seeded_vae(0)
    folder = save_diffusers(src, tmp_path / "taesd3", fmt=fmt)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["latent_channels"] == 16
    dst = seeded_vae(1)
    assert load_vae_weights(dst, folder) == "diffusers"
    assert_same_weights(src, dst)
    # a config that does not describe TAESD-SD3 is refused
    cfg["latent_channels"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VAEWeightsError, match="latent_channels"):
        load_vae_weights(seeded_vae(1), folder)


def test_diffusers_folder_round_trip_bin(tmp_path):
    _diffusers_round_trip(tmp_path, "bin")


def test_diffusers_folder_round_trip_safetensors(tmp_path):
    pytest.importorskip("safetensors", reason="the optional 'safetensors' package is not installed")
    _diffusers_round_trip(tmp_path, "safetensors")


def test_safetensors_without_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    folder = save_diffusers(seeded_vae(0), tmp_path / "f", fmt="bin")
    (folder / "diffusion_pytorch_model.bin").rename(folder / "diffusion_pytorch_model.safetensors")
    real_import = builtins.__import__

    def no_safetensors(name, *a, **k):
        if name.startswith("safetensors"):
            raise ImportError("no safetensors")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    with pytest.raises(VAEWeightsError, match="safetensors' package"):
        load_vae_weights(seeded_vae(1), folder)


def test_lightning_checkpoint_prefixes(tmp_path):
    src = seeded_vae(0, width=8)
    for prefix in ("vae.", "net.vae."):
        ck = tmp_path / f"{prefix}ckpt"
        torch.save({"state_dict": {prefix + k: v for k, v in src.state_dict().items()} | {"other.w": torch.ones(1)}}, ck)
        dst = seeded_vae(1, width=8)
        load_lightning_vae(dst, ck)
        assert_same_weights(src, dst)
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"unet.w": torch.ones(1)}}, bad)
    with pytest.raises(VAEWeightsError, match="no vae"):
        load_vae_weights(seeded_vae(1, width=8), bad)
