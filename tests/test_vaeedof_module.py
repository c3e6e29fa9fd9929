"""VAEEDOF module: 2..7 inputs, frozen VAE (no grad, no optimizer state), random-VAE guard, loss,
tiled inference, and the vaeedof_vae fallback stage feeding the fusion stage."""
import pytest
import torch
from omegaconf import OmegaConf

from lightning_modules.vaeedof import RandomVAEError, VAEEDOFConfig, VAEEDOFModule, VAEEDOFVAEConfig, VAEEDOFVAEModule
from lightning_modules.vaeedof.loss import VAEEDOFLoss, latent_loss, ssim_loss
from lightning_modules.vaeedof.network import FusionUNet, expand_to_slots, slot_order
from lightning_modules.vaeedof.weights import save_taesd
from mfif.config import ConfigError, DataConfig, ExperimentConfig

TINY = dict(vae_width=8, unet_channels=[8, 16, 16], attention_heads=2, norm_groups=4)


def make(**kw):
    m = VAEEDOFConfig(**{**TINY, **kw})
    cfg = OmegaConf.structured(ExperimentConfig(method="vaeedof", model=m, data=DataConfig(), metrics=["psnr", "ssim"]))
    torch.manual_seed(0)
    return VAEEDOFModule(cfg)


def make_vae_stage(**kw):
    m = VAEEDOFVAEConfig(**{"vae_width": 8, **kw})
    cfg = OmegaConf.structured(ExperimentConfig(method="vaeedof_vae", model=m, data=DataConfig(), metrics=["psnr"]))
    torch.manual_seed(0)
    return VAEEDOFVAEModule(cfg)


def test_slot_order_is_cyclic_duplication():
    assert slot_order(2) == [0, 1, 0, 1, 0, 1, 0]
    assert slot_order(3) == [0, 1, 2, 0, 1, 2, 0]
    assert slot_order(7) == list(range(7))
    z = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(2, 3, 4, 2, 2)
    assert expand_to_slots(z)[0, :, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="1..7"):
        slot_order(8)


def test_unet_shapes_and_checks():
    unet = FusionUNet(16, 7, [8, 16, 16], [1], True, 2, 4)
    assert unet(torch.randn(2, 7, 16, 8, 16)).shape == (2, 16, 8, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        unet(torch.randn(1, 7, 16, 12, 8))
    with pytest.raises(ValueError, match="three levels"):
        FusionUNet(16, 7, [8, 16])
    # residual_mean starts from the mean source latent when the head outputs 0
    res = FusionUNet(16, 7, [8, 16, 16], residual_mean=True, heads=2, norm_groups=4)
    torch.nn.init.zeros_(res.head[-1].weight), torch.nn.init.zeros_(res.head[-1].bias)
    z = torch.randn(1, 7, 16, 8, 8)
    assert torch.allclose(res(z), z.mean(1), atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_two_to_seven_inputs_any_size(n):
    mod = make(allow_random_vae=True).eval()
    x = torch.rand(1, n, 3, 37, 53)
    with torch.inference_mode():
        out = mod.fuse(x)
    assert out.fused.shape == (1, 3, 37, 53) and out.maps is None
    assert torch.isfinite(out.fused).all() and out.fused.min() >= 0 and out.fused.max() <= 1


def test_gray_input_and_too_many_sources():
    mod = make(allow_random_vae=True).eval()
    with torch.inference_mode():
        assert mod.fuse(torch.rand(2, 2, 1, 24, 40)).fused.shape == (2, 1, 24, 40)
        with pytest.raises(ValueError, match="2..7 sources"):
            mod.fuse(torch.rand(1, 8, 3, 16, 16))


def test_tiled_inference_inside_fuse():
    mod = make(allow_random_vae=True, tile_size=64, tile_overlap=16, tile_batch=3).eval()
    x = torch.rand(1, 3, 3, 150, 100)
    with torch.inference_mode():
        tiled = mod.fuse(x).fused
        mod.cfg.model.tile_size = 0  # whole image at once
        whole = mod.fuse(x).fused
        mod.cfg.model.tile_size = 256  # one tile covering the image == untiled
        single = mod.fuse(x).fused
    assert tiled.shape == whole.shape == (1, 3, 150, 100) and torch.isfinite(tiled).all()
    assert torch.allclose(single, whole, atol=1e-6)
    with pytest.raises(ValueError, match="tile_size"):
        make(allow_random_vae=True, tile_size=100)


def test_random_vae_guard(tmp_path):
    mod = make()  # no weights, allow_random_vae false
    assert not bool(mod.vae_ready)
    batch = {"sources": torch.rand(1, 2, 3, 16, 16), "gt": torch.rand(1, 3, 16, 16)}
    with pytest.raises(RandomVAEError, match="random weights"):
        mod.fuse(batch["sources"])
    with pytest.raises(RandomVAEError):
        mod.training_step(batch, 0)
    # real weights given -> ready; a module restored from its state dict is ready without the files
    save_taesd(make(allow_random_vae=True).net.vae, tmp_path)
    loaded = make(vae_weights=str(tmp_path / "taesd3_encoder.pth"))
    assert bool(loaded.vae_ready) and loaded.vae_source.startswith("taesd:")
    restored = make()
    restored.load_state_dict(loaded.state_dict())
    with torch.inference_mode():
        assert restored.eval().fuse(batch["sources"]).fused.shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError, match="model.vae_weights.*no such file"):
        make(vae_weights=str(tmp_path / "nope_encoder.pth"))
    with pytest.raises(ConfigError, match="only one"):
        make(vae_weights="a", vae_checkpoint="b")


def test_frozen_vae_no_grad_no_optimizer_state():
    mod = make(allow_random_vae=True)
    vae_before = {k: v.clone() for k, v in mod.net.vae.state_dict().items()}
    opt = mod.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    vae_ids = {id(p) for p in mod.net.vae.parameters()}
    in_groups = [p for g in opt.param_groups for p in g["params"]]
    assert not any(id(p) in vae_ids for p in in_groups)
    assert {id(p) for p in in_groups} == {id(p) for p in mod.net.unet.parameters()}
    mod.train()
    assert not mod.net.vae.training  # frozen VAE stays in eval mode
    batch = {"sources": torch.rand(2, 3, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)}
    loss = mod.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in mod.net.vae.parameters())
    grads = [p.grad for p in mod.net.unet.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    opt.step()
    assert not any(id(p) in vae_ids for p in opt.state)
    assert all(torch.equal(v, mod.net.vae.state_dict()[k]) for k, v in vae_before.items())


def test_loss_known_values_and_config():
    z0, z1 = torch.zeros(1, 16, 2, 2), torch.ones(1, 16, 2, 2)
    assert latent_loss(z0, z1, "l1") == 1.0 and latent_loss(z0, 2 * z1, "l2") == 4.0
    img = torch.rand(1, 3, 32, 32)
    assert ssim_loss(img, img).abs() < 1e-6
    total, parts = VAEEDOFLoss("l1", 2.0, 0.5, 0.0)(z0, z1, img, img + 0.1)
    assert torch.isclose(total, torch.tensor(2.0 * 1.0 + 0.5 * 0.1), atol=1e-5) and set(parts) == {"latent", "image_l1"}
    latent_only = VAEEDOFLoss("l1", 1.0, 0.0, 0.0)
    assert not latent_only.needs_image and latent_only(z0, z1)[0] == 1.0
    with pytest.raises(ValueError, match="latent_loss"):
        VAEEDOFLoss("huber")
    with pytest.raises(ValueError, match="not all 0"):
        VAEEDOFLoss("l1", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="ground truth"):
        make(allow_random_vae=True).training_step({"sources": torch.rand(1, 2, 3, 16, 16)}, 0)


def test_vae_stage_trains_and_feeds_fusion_stage(tmp_path):
    stage = make_vae_stage(max_images=3)
    opt = stage.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    batch = {"sources": torch.rand(2, 2, 3, 16, 24), "gt": torch.rand(2, 3, 16, 24)}
    assert stage._images(batch, sample=False).shape == (6, 3, 16, 24)  # 4 sources + 2 gt
    before = stage.vae.encoder[0].weight.clone()
    loss = stage.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in stage.vae.parameters())
    opt.step()
    assert not torch.equal(before, stage.vae.encoder[0].weight)
    with torch.inference_mode():  # latent-mean baseline keeps generic tools working
        assert stage.eval().fuse(torch.rand(1, 3, 1, 20, 20)).fused.shape == (1, 1, 20, 20)
    ck = tmp_path / "vae.ckpt"
    torch.save({"state_dict": stage.state_dict()}, ck)
    fusion = make(vae_checkpoint=str(ck))
    assert bool(fusion.vae_ready)
    for k, v in stage.vae.state_dict().items():
        assert torch.equal(v, fusion.net.vae.state_dict()[k])


def test_configs_load():
    from mfif import registry
    from mfif.config import load_config

    if "default" not in registry.datamodules():
        pytest.skip("built-in 'default' datamodule not available")
    cfg = load_config("vaeedof.yaml", ["profile=smoke"])
    assert cfg.method == "vaeedof" and cfg.model.allow_random_vae and cfg.ema.enabled
    full = load_config("vaeedof.yaml") if "matting_mfif" in registry.datamodules() else None
    if full is not None:  # Sec. 3 values
        assert full.trainer.max_steps == 180000 and full.data.patch_size == 512
        assert full.data.batch_size * full.trainer.devices == 32 and full.ema.enabled
        assert full.model.tile_overlap * 4 == full.model.tile_size == 512 and not full.model.allow_random_vae
    assert load_config("vaeedof_vae.yaml", ["profile=smoke"]).method == "vaeedof_vae"
