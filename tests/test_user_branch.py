"""The PrefGen user branch: λ=0 is the base model bit for bit, the stock IP-Adapter file
layout round-trips and loads in stock diffusers, load / scale / unload on UNets and pipelines."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from finexl.errors import FinexlError
from finexl.prefgen import loaders, user_branch
from finexl.prefgen.user_branch import UserBranchConfig

EMBED_DIM = 12
WORDS = ["red", "blue", "ball", "on", "grass", "a"]


@pytest.fixture
def tiny_pipe(one_torch_thread):
    from finexl.generate.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(WORDS, text_dim=16, channels=(16, 32), image_size=16, seed=3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _config(width: int) -> UserBranchConfig:
    return UserBranchConfig(embed_dim=EMBED_DIM, cross_attention_dim=width)


def _randomise(unet, seed: int = 1) -> None:
    """Give the branch weights unlike the text ones, so a wrong mapping changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in user_branch.trainable_parameters(unet):
            param.add_(torch.randn(param.shape, generator=generator) * 0.5)


def _images(pipe, **extra):
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    return pipe(["a red ball", "blue grass"], num_inference_steps=3, guidance_scale=2.0,
                generator=generators, output_type="np", **extra).images


def _embeds(batch: int, guided: bool, seed: int = 5):
    e_u = torch.randn(EMBED_DIM, generator=torch.Generator().manual_seed(seed))
    return user_branch.pipeline_user_embeds(e_u, batch, guided=guided)


def test_scale_zero_reproduces_the_base_pipeline_bit_for_bit(tiny_pipe):
    base = _images(tiny_pipe)
    user_branch.attach_user_branch(tiny_pipe, _config(16), scale=0.0)
    _randomise(tiny_pipe.unet)
    at_zero = _images(tiny_pipe, ip_adapter_image_embeds=_embeds(2, True))
    assert (base == at_zero).all()
    user_branch.set_user_branch_scale(tiny_pipe, 1.0)
    at_one = _images(tiny_pipe, ip_adapter_image_embeds=_embeds(2, True))
    assert abs(at_one - base).max() > 1e-3  # the branch does act when λ > 0


def test_scale_zero_on_a_bare_unet_equals_the_unet_without_branch(tiny_pipe):
    unet = tiny_pipe.unet
    sample = torch.randn(2, 12, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(1))
    pooled = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=text, class_labels=pooled).sample
        user_branch.attach_user_branch(unet, _config(16), scale=0.0)
        _randomise(unet)
        inputs = user_branch.unet_user_inputs(torch.randn(2, EMBED_DIM))
        at_zero = unet(sample, 10, encoder_hidden_states=text, class_labels=pooled,
                       added_cond_kwargs=inputs).sample
        user_branch.set_user_branch_scale(unet, {"up": 0.7})  # per-block, as diffusers
        up_only = unet(sample, 10, encoder_hidden_states=text, class_labels=pooled,
                       added_cond_kwargs=inputs).sample
    assert torch.equal(before, at_zero)
    assert not torch.equal(before, up_only)
    scales = {name: p.scale for name, p in unet.attn_processors.items() if hasattr(p, "scale")}
    assert all(s == [0.7] if name.startswith("up") else s == [0.0] for name, s in scales.items())


def test_new_branch_copies_text_key_value_weights(tiny_pipe):
    unet = tiny_pipe.unet
    user_branch.attach_user_branch(unet, _config(16))
    state = user_branch.user_branch_state_dict(unet)
    names = user_branch.cross_attention_names(unet)
    assert len(names) == 4  # down: 1, up: 2 (layers_per_block + 1), mid: 1
    for name in names:
        attn = unet.get_submodule(name[: -len(".processor")])
        assert torch.equal(state[f"{name}.to_k_ip.weight"], attn.to_k.weight)
        assert torch.equal(state[f"{name}.to_v_ip.weight"], attn.to_v.weight)
    params = user_branch.trainable_parameters(unet)
    assert isinstance(params, list)
    assert sum(p.numel() for p in params) == sum(v.numel() for v in state.values())


def test_unload_restores_the_same_processor_objects(tiny_pipe):
    unet = tiny_pipe.unet
    before = dict(unet.attn_processors)
    user_branch.attach_user_branch(tiny_pipe, _config(16))
    assert user_branch.has_user_branch(tiny_pipe)
    user_branch.unload_user_branch(tiny_pipe)
    assert not user_branch.has_user_branch(unet)
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    after = unet.attn_processors
    assert all(after[name] is before[name] for name in before)


def test_round_trip_through_the_stock_layout(tiny_pipe, tmp_path):
    unet = tiny_pipe.unet
    user_branch.attach_user_branch(unet, _config(16))
    _randomise(unet)
    state = user_branch.user_branch_state_dict(unet)
    stock = loaders.to_stock_layout(state, unet)
    assert sorted(k for k in stock if k.startswith("ip_adapter.")) == [
        f"ip_adapter.{n}.to_{kv}_ip.weight" for n in (1, 3, 5, 7) for kv in "kv"]
    assert {"image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight",
            "image_proj.norm.bias"} <= set(stock)
    back = loaders.from_stock_layout(stock, unet)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)

    path = loaders.save_user_branch(unet, tmp_path / "branch", _config(16))
    assert path.name == loaders.USER_BRANCH_WEIGHTS
    assert (tmp_path / "branch" / loaders.USER_BRANCH_CONFIG).is_file()
    user_branch.unload_user_branch(unet)
    config = loaders.load_user_branch(unet, tmp_path / "branch", scale=0.5)
    assert config == _config(16)
    reloaded = user_branch.user_branch_state_dict(unet)
    assert all(torch.equal(reloaded[k], state[k]) for k in state)
    assert all(p.scale == [0.5] for p in unet.attn_processors.values() if hasattr(p, "scale"))


def test_a_branch_for_another_unet_is_a_clear_error(tiny_pipe, tmp_path):
    from finexl.generate.tiny import build_tiny_pipeline

    user_branch.attach_user_branch(tiny_pipe, _config(16))
    loaders.save_user_branch(tiny_pipe, tmp_path, _config(16))
    other = build_tiny_pipeline(WORDS, text_dim=16, channels=(16, 32, 32), image_size=16)
    with pytest.raises(FinexlError, match="another base model"):
        loaders.load_user_branch(other, tmp_path)
    wider = build_tiny_pipeline(WORDS, text_dim=32, channels=(16, 32), image_size=16)
    with pytest.raises(FinexlError, match="text width 16"):
        loaders.load_user_branch(wider, tmp_path)
    with pytest.raises(FinexlError, match="does not exist"):
        loaders.load_user_branch(tiny_pipe, tmp_path / "missing")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FinexlError, match="cannot be read"):
        loaders.load_user_branch(tiny_pipe, tmp_path / "broken.safetensors")


def test_stock_diffusers_loads_the_file_and_gives_the_same_images(sd_dir, tmp_path,
                                                                  one_torch_thread):
    """A tiny random Stable Diffusion pipeline: our loader and diffusers' ``load_ip_adapter``
    + ``ip_adapter_image_embeds`` make the same images from the same file."""
    from diffusers import StableDiffusionPipeline

    def sd():
        pipe = StableDiffusionPipeline.from_pretrained(sd_dir, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    ours = sd()
    user_branch.attach_user_branch(ours, _config(16))
    _randomise(ours.unet)
    loaders.save_user_branch(ours, tmp_path, _config(16))
    user_branch.unload_user_branch(ours)
    loaders.load_user_branch(ours, tmp_path, scale=0.8)

    stock = sd()
    stock.load_ip_adapter(str(tmp_path), subfolder="", weight_name=loaders.USER_BRANCH_WEIGHTS,
                          image_encoder_folder=None)
    stock.set_ip_adapter_scale(0.8)

    def images(pipe):
        generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return pipe(["a red ball", "blue grass"], num_inference_steps=2, guidance_scale=3.0,
                    height=16, width=16, generator=generators, output_type="np",
                    ip_adapter_image_embeds=_embeds(2, True)).images

    ours_images, stock_images = images(ours), images(stock)
    assert (ours_images == stock_images).all()
    stock.set_ip_adapter_scale(0.0)
    assert abs(images(stock) - ours_images).max() > 0  # and the branch did something
