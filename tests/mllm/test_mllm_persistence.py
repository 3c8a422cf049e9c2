"""save_pretrained / from_pretrained: full and delta (frozen LLM or LoRA) folders round-trip
bit-exactly; a tokenizer with other codebooks or a changed base LLM is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from semhitok.mllm import MLLMCollator, MLLMConfig, MLLMExample, MLLMFolderError, SemHiTokMLLM


def _base_folder(tmp_path, llm_factory, text_tokenizer_factory, kind="qwen", tied=True):
    folder = tmp_path / "base-llm"
    llm_factory(kind, tied).save_pretrained(folder)
    text_tokenizer_factory(True).save_pretrained(folder)
    return folder


def _batch(mm):
    img = torch.randint(0, mm.ids.num_image, (16,), generator=torch.Generator().manual_seed(0))
    return MLLMCollator(mm.format, uncond_prob=0.0)([MLLMExample("understanding", "what?", img, "a boot"), MLLMExample("generation", "a boot", img)])


def _perturb(mm):
    """Stand-in for training: move every trainable tensor away from its init."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in mm.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    batch = _batch(a)
    with torch.no_grad():
        assert torch.equal(a(**batch.model_inputs()).loss, b(**batch.model_inputs()).loss)


def _keys(path):
    with safe_open(str(path / "mllm.safetensors"), "pt") as f:
        return set(f.keys())


def test_full_round_trip_is_bit_exact(tmp_path, mllm_factory):
    mm = mllm_factory(kind="llama", tied=False, chat=False, train="full", adapter="single")
    _perturb(mm)
    mm.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert files == {"mllm_config.json", "mllm.safetensors", "tokenizer", "text_tokenizer", "llm"}
    assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pt"))
    record = json.loads((tmp_path / "m" / "mllm_config.json").read_text())
    assert record["llm"]["weights"] == "full" and record["config"]["adapter"] == "single"
    loaded = SemHiTokMLLM.from_pretrained(tmp_path / "m")
    _assert_same(mm, loaded)
    assert loaded.config == mm.config and loaded.format.chat is False


def test_adapter_only_delta_stores_no_llm_weights(tmp_path, llm_factory, text_tokenizer_factory, tiny_tokenizer):
    base = _base_folder(tmp_path, llm_factory, text_tokenizer_factory)
    mm = SemHiTokMLLM.from_llm(base, tiny_tokenizer, config=MLLMConfig(train="adapter"))
    assert mm.llm_source == str(base.resolve())
    _perturb(mm)
    mm.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "llm").exists()
    keys = _keys(tmp_path / "m")
    assert not any(k.startswith("llm.") for k in keys) and "llm_probe" in keys
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "m"))
    # the base moved: say where it is now
    moved = base.rename(tmp_path / "elsewhere")
    with pytest.raises(MLLMFolderError, match="base LLM .* is not available.*base_llm"):
        SemHiTokMLLM.from_pretrained(tmp_path / "m")
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "m", base_llm=moved))


def test_lora_delta_and_lora_full_round_trips(tmp_path, llm_factory, text_tokenizer_factory, tiny_tokenizer):
    base = _base_folder(tmp_path, llm_factory, text_tokenizer_factory, kind="llama", tied=False)
    mm = SemHiTokMLLM.from_llm(base, tiny_tokenizer, config=MLLMConfig(train="lora", lora_rank=2))
    _perturb(mm)  # lora_B leaves zero: the LoRA now changes the outputs
    mm.save_pretrained(tmp_path / "delta")
    keys = _keys(tmp_path / "delta")
    llm_keys = {k for k in keys if k.startswith("llm.")}
    assert llm_keys and all("lora_" in k for k in llm_keys)
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "delta"))
    mm.save_pretrained(tmp_path / "full", llm_weights="full")
    plain = (tmp_path / "full" / "llm")
    with safe_open(str(plain / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.0.self_attn.q_proj.weight" in names and not any("lora_" in n or "base_layer" in n for n in names)
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "full"))


def test_bf16_storage_rounds_the_trained_weights_once_and_keeps_the_probe_exact(tmp_path, llm_factory, text_tokenizer_factory, tiny_tokenizer):
    base = _base_folder(tmp_path, llm_factory, text_tokenizer_factory, kind="llama", tied=False)
    mm = SemHiTokMLLM.from_llm(base, tiny_tokenizer, config=MLLMConfig(train="lora", lora_rank=2))
    _perturb(mm)
    mm.save_pretrained(tmp_path / "fp32")
    mm.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    with safe_open(str(tmp_path / "bf16" / "mllm.safetensors"), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes.pop("llm_probe") == torch.float32
    assert set(dtypes.values()) == {torch.bfloat16}
    size = lambda name: (tmp_path / name / "mllm.safetensors").stat().st_size  # noqa: E731
    assert size("bf16") < 0.6 * size("fp32")
    loaded = SemHiTokMLLM.from_pretrained(tmp_path / "bf16")
    own = mm.state_dict()
    for k, v in loaded.state_dict().items():
        # every stored tensor is the original rounded to bf16 once, back in the model's dtype;
        # the base LLM's own weights come from the base folder, untouched
        stored = k.split(".")[0] in ("adapter", "image_head") or "lora_" in k
        assert v.dtype == own[k].dtype, k
        assert torch.equal(v, own[k].to(torch.bfloat16).float() if stored else own[k]), k
    with pytest.raises(ValueError, match="floating dtype"):
        mm.save_pretrained(tmp_path / "int", dtype=torch.int8)


def test_a_delta_folder_takes_the_base_llms_text_tokenizer_and_checks_it(tmp_path, llm_factory, text_tokenizer_factory, tiny_tokenizer):
    base = _base_folder(tmp_path, llm_factory, text_tokenizer_factory)
    mm = SemHiTokMLLM.from_llm(base, tiny_tokenizer, config=MLLMConfig(train="lora", lora_rank=2))
    _perturb(mm)
    mm.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "text_tokenizer").exists()  # the base folder has the same one
    record = json.loads((tmp_path / "m" / "mllm_config.json").read_text())
    assert record["text_tokenizer"]["from_base_llm"] is True
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "m"))
    # a text tokenizer that differs from the base's is saved with the model
    other = text_tokenizer_factory(False)  # no chat template
    SemHiTokMLLM.from_llm(mm.llm, tiny_tokenizer, other, llm_source=str(base)).save_pretrained(tmp_path / "own")
    assert (tmp_path / "own" / "text_tokenizer").is_dir()
    # the base's tokenizer changed after training: refused, not silently used
    text_tokenizer_factory(False).save_pretrained(base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(MLLMFolderError, match="text tokenizer of the base LLM"):
        SemHiTokMLLM.from_pretrained(tmp_path / "m")


def test_other_codebooks_or_another_base_llm_are_refused(tmp_path, llm_factory, text_tokenizer_factory, tiny_tokenizer, other_tokenizer):
    base = _base_folder(tmp_path, llm_factory, text_tokenizer_factory)
    mm = SemHiTokMLLM.from_llm(base, tiny_tokenizer)
    mm.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"^the tokenizer's codebooks \(fingerprint \w+\) are not those the MLLM in .* was trained with") as info:
        SemHiTokMLLM.from_pretrained(tmp_path / "m", tokenizer=other_tokenizer)
    assert "\n" not in str(info.value)
    SemHiTokMLLM.from_pretrained(tmp_path / "m", tokenizer=tiny_tokenizer)  # the same codebooks load
    llm_factory("qwen", True, seed=9).save_pretrained(base)  # the base folder now holds another model
    with pytest.raises(MLLMFolderError, match="is not the one the MLLM .* was trained on"):
        SemHiTokMLLM.from_pretrained(tmp_path / "m")


def test_saving_replaces_an_mllm_folder_and_refuses_others(tmp_path, mllm_factory):
    mm = mllm_factory(train="full")
    mm.save_pretrained(tmp_path / "m")
    _perturb(mm)
    mm.save_pretrained(tmp_path / "m")  # over the old one
    _assert_same(mm, SemHiTokMLLM.from_pretrained(tmp_path / "m"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing left beside it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="holds no mllm_config.json"):
        mm.save_pretrained(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="llm_weights=delta needs the base LLM"):
        mllm_factory(train="adapter").save_pretrained(tmp_path / "d", llm_weights="delta")
    assert not (tmp_path / "d").exists()


def test_broken_folders_fail_with_one_line(tmp_path, mllm_factory):
    with pytest.raises(MLLMFolderError, match="does not exist"):
        SemHiTokMLLM.from_pretrained(tmp_path / "none")
    mm = mllm_factory(train="full")
    mm.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "mllm_config.json"
    record = json.loads(config.read_text())
    record["config"]["adapter"] = "table"  # weights no longer fit
    config.write_text(json.dumps(record))
    with pytest.raises(MLLMFolderError, match="do not fit mllm_config.json: missing adapter.table.weight"):
        SemHiTokMLLM.from_pretrained(tmp_path / "m")
    record["format_version"] = 99
    config.write_text(json.dumps(record))
    with pytest.raises(MLLMFolderError, match="format version 99"):
        SemHiTokMLLM.from_pretrained(tmp_path / "m")


def test_llm_probe_reaches_the_last_value_of_large_tensors():
    from semhitok.mllm.persistence import llm_probe

    big = torch.zeros(28_311_552)  # SmolLM2's embedding table: a float32 linspace rounds past its end
    big[-1] = 7.0
    probe = llm_probe({"b": torch.arange(3.0), "a": big, "i": torch.arange(4)})
    assert probe.tolist()[:8][-1] == 7.0 and probe.tolist()[8:] == [0.0, 1.0, 2.0]  # sorted by name, ints skipped


def test_a_shipped_tokenizer_is_recorded_by_name_not_copied(tmp_path, llm_factory, text_tokenizer_factory):
    from semhitok.pretrained import pretrained_path

    mm = SemHiTokMLLM.from_llm(llm_factory("llama", tied=False), "mini-semhitok", text_tokenizer_factory())
    assert mm.tokenizer_source == "mini-semhitok"
    mm.save_pretrained(tmp_path / "mm", llm_weights="full")
    assert not (tmp_path / "mm" / "tokenizer").exists()
    assert json.loads((tmp_path / "mm" / "mllm_config.json").read_text())["tokenizer"] == {"base": "mini-semhitok"}
    back = SemHiTokMLLM.from_pretrained(tmp_path / "mm")
    assert back.tokenizer_source == "mini-semhitok" and back.tokenizer.fingerprint() == mm.tokenizer.fingerprint()
    # a tokenizer given as a folder is copied when saved again
    folder_built = SemHiTokMLLM.from_pretrained(tmp_path / "mm", tokenizer=pretrained_path("mini-semhitok"))
    assert folder_built.tokenizer_source is None
    folder_built.save_pretrained(tmp_path / "copy", llm_weights="full")
    assert (tmp_path / "copy" / "tokenizer" / "config.json").is_file()
    assert json.loads((tmp_path / "copy" / "mllm_config.json").read_text())["tokenizer"] == {"base": None}
