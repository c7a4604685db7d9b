"""Tests of `textvae.backbones`: pretrained (tiny, random, saved to a folder) BERT / GPT-2 parts.

No network: tiny BERT and GPT-2 models and tokenizers are built with `transformers` / `tokenizers` and
saved to a temporary folder, which stands in for a Hub id. Every pair with at least one hf part, at batch
sizes 1 and 3: shapes, causality, closed-form KL, save / load without the backbone folders, cached ==
uncached decoding, beam search, training; plus the Optimus conditioning and the offline error messages.
"""

from __future__ import annotations

import itertools
import json
import shutil

import huggingface_hub.constants
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import textvae  # noqa: F401  (registers TextVAEModel with AutoModel)
from textvae import TextVAEConfig, TextVAEModel
from textvae.generation import beam_search, generate
from textvae.models.backbones import (
    PretrainedDecoderState,
    backbone_config_overrides,
    load_backbone_config,
    load_backbone_tokenizer,
    load_pretrained_backbones,
)
from textvae.pipeline import TextVAEPipeline

from .helpers import TINY_TRANSFORMER

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird flew over the house", "we like apples"]
ARCHITECTURES = ("lstm", "gru", "transformer", "hf")
PAIRS = [pair for pair in itertools.product(ARCHITECTURES, ARCHITECTURES) if "hf" in pair]
BATCH_SIZES = (1, 3)
VOCAB_SIZE, LATENT_DIM = 23, 4  # the non-hf decoders' own vocabulary (pad 0, bos 1, eos 2, unk 3)
OFFLINE_ID = "no-such-org/no-such-model"


def _save_tiny_gpt2(folder) -> None:
    """A byte-level BPE tokenizer whose only special token is `<|endoftext|>`, and a 2-layer GPT-2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXTS * 5, trainer)
    special = "<|endoftext|>"
    wrapped = transformers.GPT2TokenizerFast(
        tokenizer_object=tokenizer, bos_token=special, eos_token=special, unk_token=special
    )
    wrapped.save_pretrained(folder)
    config = transformers.GPT2Config(
        vocab_size=len(wrapped),
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=wrapped.eos_token_id,
        eos_token_id=wrapped.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)


def _save_tiny_bert(folder) -> None:
    """A WordPiece tokenizer over the test sentences' words, and a 1-layer BERT."""
    words = sorted({word for text in TEXTS for word in text.split()})
    vocab = {
        token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])
    }
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    wrapped = transformers.BertTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    wrapped.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """{"bert": folder, "gpt2": folder} of tiny random pretrained models with their tokenizers."""
    root = tmp_path_factory.mktemp("backbones")
    _save_tiny_gpt2(root / "gpt2")
    _save_tiny_bert(root / "bert")
    return {"bert": str(root / "bert"), "gpt2": str(root / "gpt2")}


@pytest.fixture
def offline(monkeypatch):
    """The Hugging Face Hub in offline mode: a Hub id fails at once instead of after network retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def config_kwargs(encoder_type: str, decoder_type: str, backbones: dict, **overrides) -> dict:
    """What training code passes: tiny architecture options, then the backbones' overrides."""
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        embedding_size=16,
        hidden_size=16,
        latent_dim=LATENT_DIM,
        encoder_type=encoder_type,
        decoder_type=decoder_type,
        encoder_pooling="summary",
        **TINY_TRANSFORMER,
    )
    if encoder_type == "hf":
        kwargs["encoder_name_or_path"] = backbones["bert"]
    if decoder_type == "hf":
        kwargs["decoder_name_or_path"] = backbones["gpt2"]
    kwargs.update(overrides)
    kwargs.update(backbone_config_overrides(kwargs))
    return kwargs


def hf_model(
    encoder_type: str, decoder_type: str, backbones: dict, seed: int = 0, **overrides
) -> TextVAEModel:
    torch.manual_seed(seed)
    model = TextVAEModel(TextVAEConfig(**config_kwargs(encoder_type, decoder_type, backbones, **overrides)))
    return load_pretrained_backbones(model).eval()


def make_batch(model: TextVAEModel, batch_size: int, seed: int = 0, padded: bool = True) -> dict:
    """Model inputs: decoder ids in the decoder's vocabulary, BERT ids when the encoder is hf."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    first_word = 1 if config.decoder_type == "hf" else 4  # GPT-2: id 0 is <|endoftext|>
    lengths = [6 - (row % 3) * 2 if padded else 6 for row in range(batch_size)]
    batch = _pad(
        [
            [config.bos_token_id, *_words(first_word, config.vocab_size, n, generator), config.eos_token_id]
            for n in lengths
        ],
        config.pad_token_id,
    )
    if config.encoder_type == "hf" and config.has_latent:
        bert_vocab = config.encoder_backbone_config["vocab_size"]
        rows = [[2, *_words(5, bert_vocab, n, generator), 3] for n in lengths]  # [CLS] words [SEP]
        encoder_ids, encoder_mask = _pad(rows, 0).values()
        batch.update(encoder_input_ids=encoder_ids, encoder_attention_mask=encoder_mask)
    return batch


def _words(low: int, high: int, count: int, generator) -> list[int]:
    return torch.randint(low, high, (count,), generator=generator).tolist()


def _pad(rows: list[list[int]], pad_id: int) -> dict:
    longest = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [pad_id] * (longest - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows])
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def fixed_z(batch_size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def boost_eos(model: TextVAEModel, amount: float = 4.0) -> None:
    """Make EOS likely (through a hook on the output layer), so random models stop early."""
    decoder = model.decoder
    output_layer = (
        decoder.backbone.get_output_embeddings() if model.config.decoder_type == "hf" else decoder.output
    )
    eos = model.config.eos_token_id

    def add_to_eos(module, inputs, logits):
        logits = logits.clone()
        logits[..., eos] += amount
        return logits

    output_layer.register_forward_hook(add_to_eos)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_forward_shapes(backbones, encoder_type, decoder_type, batch_size):
    model = hf_model(encoder_type, decoder_type, backbones)
    batch = make_batch(model, batch_size)
    output = model(**batch)
    assert output.rec_loss.shape == output.kl.shape == (batch_size,)
    assert output.mu.shape == output.z.shape == (batch_size, LATENT_DIM)
    assert output.logits.shape == (batch_size, batch["input_ids"].size(1) - 1, model.config.vocab_size)
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_decoder_cannot_see_future_tokens(backbones, encoder_type, decoder_type, batch_size):
    model = hf_model(encoder_type, decoder_type, backbones)
    batch = make_batch(model, batch_size, padded=False)
    z = fixed_z(batch_size)
    logits = model(**batch, z=z).logits
    input_ids = batch["input_ids"]
    for position in range(1, input_ids.size(1) - 1):
        changed = input_ids.clone()
        changed[:, position] = changed[:, position] % (model.config.vocab_size - 5) + 5
        changed_logits = model(**{**batch, "input_ids": changed}, z=z).logits
        torch.testing.assert_close(changed_logits[:, :position], logits[:, :position], rtol=0, atol=1e-5)
        assert not torch.allclose(changed_logits[:, position], logits[:, position])


@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_kl_matches_closed_form(backbones, encoder_type, decoder_type):
    model = hf_model(encoder_type, decoder_type, backbones)
    output = model(**make_batch(model, 3))
    posterior = torch.distributions.Normal(output.mu, torch.exp(0.5 * output.logvar))
    prior = torch.distributions.Normal(torch.zeros_like(output.mu), torch.ones_like(output.mu))
    torch.testing.assert_close(output.kl, torch.distributions.kl_divergence(posterior, prior).sum(dim=1))


@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_saved_model_reloads_without_backbones_or_network(
    backbones, encoder_type, decoder_type, tmp_path, offline
):
    # The backbones are copied so that they can be deleted before reloading.
    copies = {name: shutil.copytree(folder, tmp_path / name) for name, folder in backbones.items()}
    model = hf_model(encoder_type, decoder_type, {name: str(path) for name, path in copies.items()})
    batch = make_batch(model, 3)
    expected = model(**batch, sample_latent=False)
    model.save_pretrained(tmp_path / "model")
    for folder in copies.values():
        shutil.rmtree(folder)
    reloaded, info = TextVAEModel.from_pretrained(tmp_path / "model", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    for loaded in (reloaded, transformers.AutoModel.from_pretrained(tmp_path / "model")):
        assert isinstance(loaded, TextVAEModel)
        reloaded_state = loaded.state_dict()
        assert all(torch.equal(reloaded_state[name], value) for name, value in model.state_dict().items())
        output = loaded.eval()(**batch, sample_latent=False)
        torch.testing.assert_close(output.mu, expected.mu, rtol=0, atol=1e-6)
        torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=1e-5)
        if decoder_type == "hf":  # GPT-2's LM head is still its input embedding
            backbone = loaded.decoder.backbone
            assert backbone.get_output_embeddings().weight is backbone.get_input_embeddings().weight


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_cached_generation_matches_uncached(backbones, encoder_type, decoder_type, batch_size):
    model = hf_model(encoder_type, decoder_type, backbones)
    z = fixed_z(batch_size)
    assert torch.equal(generate(model, z, max_length=12), generate(model, z, max_length=12, use_cache=False))
    sampled = [
        generate(
            model,
            z,
            max_length=12,
            do_sample=True,
            generator=torch.Generator().manual_seed(3),
            use_cache=cache,
        )
        for cache in (True, False)
    ]
    assert torch.equal(sampled[0], sampled[1])


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_beam_search_returns_eos_terminated_rows(backbones, encoder_type, decoder_type, batch_size):
    model = hf_model(encoder_type, decoder_type, backbones)
    boost_eos(model)
    z = fixed_z(batch_size)
    beams = beam_search(model, z, beam_size=3, max_length=20)
    assert beams.size(0) == batch_size
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    for row in beams.tolist():
        assert eos in row, f"row never ends: {row}"
        assert all(token == pad for token in row[row.index(eos) + 1 :])
    assert torch.equal(beam_search(model, z, beam_size=1, max_length=20), generate(model, z, max_length=20))


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_adam_steps_lower_the_loss(backbones, encoder_type, decoder_type, batch_size):
    model = hf_model(encoder_type, decoder_type, backbones).train()
    batch = make_batch(model, batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    with torch.no_grad():
        before = model(**batch, sample_latent=False).loss
    for _ in range(8):
        optimizer.zero_grad()
        model(**batch, return_logits=False).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(**batch, sample_latent=False).loss
    assert after < before - 1.0


@pytest.mark.parametrize("z_to_inputs,z_to_memory", [(True, True), (True, False), (False, True)])
def test_gpt2_decoder_reads_z_the_optimus_ways(backbones, z_to_inputs, z_to_memory):
    model = hf_model("lstm", "hf", backbones, z_to_inputs=z_to_inputs, z_to_memory=z_to_memory)
    batch = make_batch(model, 3, padded=False)
    first = model(**batch, z=fixed_z(3, seed=1)).logits
    second = model(**batch, z=fixed_z(3, seed=2)).logits
    assert not torch.allclose(first[:, 0], second[:, 0])
    decoder = model.decoder
    assert (decoder.latent_to_inputs is not None) == z_to_inputs
    assert (decoder.latent_to_memory is not None) == z_to_memory


@pytest.mark.parametrize("z_to_memory", (True, False))
def test_gpt2_cached_steps_match_one_pass(backbones, z_to_memory):
    """Token by token, or in chunks, the cache (memory slot included) gives the one-pass states."""
    model = hf_model("lstm", "hf", backbones, z_to_memory=z_to_memory)
    input_ids = make_batch(model, 3, padded=False)["input_ids"]
    z = fixed_z(3)
    decoder = model.decoder
    full, state = decoder(input_ids, z)
    assert isinstance(state, PretrainedDecoderState) and state.length == input_ids.size(1)
    assert state.cache.get_seq_length() == input_ids.size(1) + int(z_to_memory)
    steps, state = [], None
    for position in range(input_ids.size(1)):
        hidden, state = decoder(input_ids[:, position : position + 1], z, state)
        steps.append(hidden)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    first, state = decoder(input_ids[:, :3], z)
    rest, _ = decoder(input_ids[:, 3:], z, state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=1e-5)


def test_gpt2_reorder_state_selects_batch_rows(backbones):
    model = hf_model("lstm", "hf", backbones)
    input_ids = make_batch(model, 3, padded=False)["input_ids"]
    z, index = fixed_z(3), torch.tensor([2, 0, 0, 1])
    _, state = model.decoder(input_ids[:, :4], z)
    state = model.decoder.reorder_state(state, index)
    continued, _ = model.decoder(input_ids[index, 4:], z[index], state)
    from_start, _ = model.decoder(input_ids[index], z[index])
    torch.testing.assert_close(continued, from_start[:, 4:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("encoder_type", ("hf", "transformer"))
def test_padding_changes_no_real_output(backbones, encoder_type):
    model = hf_model(encoder_type, "hf", backbones, encoder_pooling="mean")
    batch = make_batch(model, 3)
    z = fixed_z(3)
    batched = model(**batch, z=z, sample_latent=False)
    for row in range(3):
        alone = {"input_ids": _unpadded(batch["input_ids"], batch["attention_mask"], row)}
        if "encoder_input_ids" in batch:
            alone["encoder_input_ids"] = _unpadded(
                batch["encoder_input_ids"], batch["encoder_attention_mask"], row
            )
        output = model(**alone, z=z[row : row + 1], sample_latent=False)
        torch.testing.assert_close(output.mu[0], batched.mu[row], rtol=0, atol=1e-5)
        torch.testing.assert_close(output.rec_loss[0], batched.rec_loss[row], rtol=0, atol=1e-4)


def _unpadded(ids: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """(1, n) the real tokens of one row."""
    return ids[row : row + 1, : int(mask[row].sum())]


def test_gpt2_language_model_without_latent(backbones):
    model = hf_model("hf", "hf", backbones, latent_dim=0)
    assert model.encoder is None and model.config.encoder_backbone_config is None
    output = model(**make_batch(model, 3))
    assert output.z is None and torch.equal(output.kl, torch.zeros(3))
    cached = generate(model, num_sequences=3, max_length=10)
    assert torch.equal(cached, generate(model, num_sequences=3, max_length=10, use_cache=False))


def test_load_pretrained_backbones_copies_the_weights(backbones):
    model = hf_model("hf", "hf", backbones)
    bert = transformers.AutoModel.from_pretrained(backbones["bert"])
    gpt2 = transformers.AutoModelForCausalLM.from_pretrained(backbones["gpt2"])
    for backbone, reference in ((model.encoder.backbone, bert), (model.decoder.backbone, gpt2)):
        state = backbone.state_dict()
        assert all(torch.equal(state[name], value) for name, value in reference.state_dict().items())


def test_overrides_come_from_the_backbones(backbones):
    kwargs = config_kwargs("hf", "hf", backbones)
    gpt2 = load_backbone_tokenizer(backbones["gpt2"])
    assert kwargs["vocab_size"] == len(gpt2)
    endoftext = gpt2.convert_tokens_to_ids("<|endoftext|>")
    assert kwargs["pad_token_id"] == kwargs["bos_token_id"] == kwargs["eos_token_id"] == endoftext
    assert kwargs["encoder_backbone_config"]["model_type"] == "bert"
    assert kwargs["decoder_backbone_config"]["model_type"] == "gpt2"
    assert kwargs["hidden_size"] == 16
    # Extra dropout defaults to none on a pretrained decoder, unless asked for.
    bare = {"decoder_type": "hf", "decoder_name_or_path": backbones["gpt2"]}
    assert backbone_config_overrides(bare)["decoder_input_dropout"] == 0.0
    assert "decoder_input_dropout" not in backbone_config_overrides({**bare, "decoder_input_dropout": 0.3})


def test_backbone_tokenizers_have_special_tokens(backbones):
    gpt2 = load_backbone_tokenizer(backbones["gpt2"])
    assert gpt2.bos_token == gpt2.eos_token == gpt2.pad_token == "<|endoftext|>"
    bert = load_backbone_tokenizer(backbones["bert"])
    assert (bert.bos_token, bert.eos_token, bert.pad_token) == ("[CLS]", "[SEP]", "[PAD]")


def test_encoder_refuses_ids_from_another_vocabulary(backbones):
    model = hf_model("hf", "hf", backbones)
    batch = make_batch(model, 2)
    with pytest.raises(ValueError, match="encoder_input_ids"):
        model(batch["input_ids"].clamp(min=200), batch["attention_mask"])


def test_offline_hub_id_fails_with_a_clear_message(backbones, offline):
    for load in (load_backbone_tokenizer, load_backbone_config):
        with pytest.raises(ValueError, match=f"could not load the pretrained .*'{OFFLINE_ID}'"):
            load(OFFLINE_ID)
    with pytest.raises(ValueError, match=OFFLINE_ID):
        backbone_config_overrides({"decoder_type": "hf", "decoder_name_or_path": OFFLINE_ID})
    with pytest.raises(ValueError, match=OFFLINE_ID):
        TextVAEModel(TextVAEConfig(encoder_type="hf", encoder_name_or_path=OFFLINE_ID))
    # A model whose config holds its backbone builds offline, but cannot fetch pretrained weights.
    model = TextVAEModel(TextVAEConfig(**config_kwargs("lstm", "hf", backbones)))
    model.config.decoder_name_or_path = OFFLINE_ID
    with pytest.raises(ValueError, match=f"pretrained decoder '{OFFLINE_ID}'"):
        load_pretrained_backbones(model)


def test_missing_local_folder_is_named(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=f"folder not found: {missing}"):
        load_backbone_tokenizer(missing)
    with pytest.raises(ValueError, match="decoder_name_or_path"):
        backbone_config_overrides({"decoder_type": "hf"})


def test_cli_trains_and_samples_a_tiny_bert_gpt2_pair(backbones, tmp_path, capsys, monkeypatch):
    from textvae.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 6) + "\n", encoding="utf-8")
    copies = {name: shutil.copytree(folder, tmp_path / name) for name, folder in backbones.items()}
    run = tmp_path / "run"
    train_args = (
        f"train --data {corpus} -o {run} --epochs 1 --batch-size 8 --latent-dim 4 --no-progress --device cpu"
    )
    hf_args = f"--encoder-type hf --decoder-type hf --encoder-name-or-path {copies['bert']} "
    hf_args += f"--decoder-name-or-path {copies['gpt2']} --encoder-pooling summary"
    assert main([*train_args.split(), *hf_args.split()]) == 0
    capsys.readouterr()
    # The run folder alone is enough: no backbone folders, no network.
    for folder in copies.values():
        shutil.rmtree(folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["sample", str(run), "-n", "3", "--seed", "0", "--max-length", "10", "--device", "cpu"]) == 0
    assert main(["reconstruct", str(run), "the cat sat", "--max-length", "20", "--device", "cpu"]) == 0
    assert capsys.readouterr().out  # (a random byte-level GPT-2 may write any byte, newlines included)
    assert (
        main(["interpolate", str(run), "the cat sat", "a dog ran", "--steps", "3", "--max-length", "8"]) == 0
    )
    assert (
        len(capsys.readouterr().out.splitlines()) == 2 + 3
    )  # the inputs, then one line per point, whatever bytes
    evaluate = ["evaluate", str(run), "--data", str(corpus), "--split", "train", "--iw-samples", "3"]
    assert main([*evaluate, "--limit", "4", "--diversity-samples", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["num_sentences"] == 4 and results["au"] is not None
    pipeline = TextVAEPipeline.from_pretrained(run, device="cpu")
    assert len(pipeline.sample(3, seed=0, max_length=10)) == 3
    assert pipeline.model.config.encoder_backbone_config["model_type"] == "bert"


def test_cli_names_an_unreachable_backbone(tmp_path, capsys, offline):
    from textvae.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 6) + "\n", encoding="utf-8")
    args = (
        f"train --data {corpus} -o {tmp_path / 'run'} --decoder-type hf --decoder-name-or-path {OFFLINE_ID}"
    )
    assert main(args.split()) == 2
    error = capsys.readouterr().err.strip()
    assert OFFLINE_ID in error and "Traceback" not in error and len(error.splitlines()) == 1
