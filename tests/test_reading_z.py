"""Ways to make the decoder read z: the bag-of-words loss (Zhao et al. 2017) and the z-to-output skip
connection (Dieng et al. 2019)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from textvae import TextVAEConfig
from textvae.cli import main
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN, random_batch, tiny_model


def test_bag_of_words_loss_scores_every_target_word_from_z_alone():
    model = tiny_model(bag_of_words_loss=0.5)
    input_ids, attention_mask = random_batch(3)
    output = model(input_ids, attention_mask, sample_latent=False, kl_weight=0.3)
    log_probs = F.log_softmax(model.bag_of_words(output.mu), dim=-1)  # (B, V)
    for row in range(3):
        words = input_ids[row, 1 : int(attention_mask[row].sum())]  # the words and EOS, never BOS
        torch.testing.assert_close(output.bow_loss[row], -log_probs[row, words].sum())
    expected = output.rec_loss.mean() + 0.3 * output.kl.mean() + 0.5 * output.bow_loss.mean()
    torch.testing.assert_close(output.loss, expected)


def test_bag_of_words_loss_leaves_rec_alone_and_is_on_by_default():
    plain = tiny_model(seed=3, bag_of_words_loss=0.0)
    with_bow = tiny_model(seed=3, bag_of_words_loss=1.0)
    assert tiny_model().config.bag_of_words_loss == 1.0 and tiny_model().bag_of_words is not None
    assert plain.bag_of_words is None and with_bow.bag_of_words is not None
    with_bow.load_state_dict(plain.state_dict(), strict=False)  # the same encoder and decoder
    input_ids, attention_mask = random_batch(4)
    a = plain(input_ids, attention_mask, sample_latent=False)
    b = with_bow(input_ids, attention_mask, sample_latent=False)
    assert a.bow_loss is None
    torch.testing.assert_close(a.rec_loss, b.rec_loss)
    assert float(b.loss.detach()) > float(a.loss.detach())


def test_bag_of_words_loss_has_no_head_for_a_language_model():
    model = tiny_model(latent_dim=0, bag_of_words_loss=1.0)
    assert model.bag_of_words is None
    assert model(*random_batch(2)).bow_loss is None


def test_z_to_output_makes_the_decoder_read_z_past_the_recurrence():
    # With z kept out of the initial state and the inputs, only the skip connection carries it.
    model = tiny_model(z_to_output=True, z_to_inputs=False, z_to_initial_state=False)
    input_ids, attention_mask = random_batch(2)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    first, _ = model.reconstruction_loss(input_ids, attention_mask, z)
    second, _ = model.reconstruction_loss(input_ids, attention_mask, -z)
    assert not torch.allclose(first, second)
    blind = tiny_model(z_to_inputs=False, z_to_initial_state=False, z_to_output=False)
    torch.testing.assert_close(
        blind.reconstruction_loss(input_ids, attention_mask, z)[0],
        blind.reconstruction_loss(input_ids, attention_mask, -z)[0],
    )


def test_z_to_output_starts_at_zero_from_a_language_model():
    lm = tiny_model(seed=1, latent_dim=0)
    vae = tiny_model(seed=2, z_to_output=True)
    vae.init_decoder_from(lm)
    input_ids, attention_mask = random_batch(3)
    z = 3.0 * torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        vae.reconstruction_loss(input_ids, attention_mask, z)[0],
        lm.reconstruction_loss(input_ids, attention_mask, None)[0],
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(z_to_output=True, decoder_type="transformer", num_attention_heads=2), "z_to_output"),
        (dict(bag_of_words_loss=-1.0), "bag_of_words_loss"),
        (dict(bag_of_words_loss=float("nan")), "bag_of_words_loss"),
    ],
)
def test_bad_values_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TextVAEConfig(vocab_size=20, embedding_size=8, hidden_size=8, latent_dim=4, **bad)


def test_training_logs_the_bag_of_words_loss(tmp_path, corpus_file):
    model = {**TINY_TRAIN["model"], "bag_of_words_loss": 1.0, "z_to_output": True}
    config = TrainConfig(
        data=str(corpus_file), **{**TINY_TRAIN, "model": model, "log_steps": 1, "free_bits": 0.0}
    )
    run = train(config, output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records and all(r["bow"] > 0 for r in train_records)
    # The logged loss adds the weighted bag-of-words loss to rec and the weighted KL (no free bits here).
    record = train_records[-1]
    assert record["loss"] == pytest.approx(
        record["rec"] + record["kl_weight"] * record["kl"] + record["bow"], rel=1e-4
    )
    saved = json.loads((run / "config.json").read_text())
    assert saved["bag_of_words_loss"] == 1.0 and saved["z_to_output"] is True


def test_cli_takes_the_options(tmp_path, corpus_file, capsys):
    code = main(
        ["train", "--data", str(corpus_file), "-o", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16",
         "--embedding-size", "16", "--hidden-size", "16", "--latent-dim", "4", "--no-progress", "--no-fit-prior",
         "--bag-of-words-loss", "0.5", "--z-to-output"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["bag_of_words_loss"] == 0.5 and saved["z_to_output"] is True
    code = main(
        ["train", "--data", str(corpus_file), "-o", str(tmp_path / "bad"), "--bag-of-words-loss", "inf"]
    )
    assert code == 2 and "bag_of_words_loss" in capsys.readouterr().err.replace("-", "_")


def test_z_to_output_is_skipped_without_a_z():
    # reconstruction_loss(..., None) scores the decoder alone (the exact likelihood of a decoder that
    # ignores z): the skip connection then adds nothing, as the initial state from z does.
    model = tiny_model(z_to_output=True, z_to_inputs=False, z_to_initial_state=False)
    input_ids, attention_mask = random_batch(3)
    without = model.reconstruction_loss(input_ids, attention_mask, None)[0]
    with torch.no_grad():
        model.decoder.latent_to_output.weight.zero_()
        model.decoder.latent_to_output.bias.zero_()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(without, model.reconstruction_loss(input_ids, attention_mask, z)[0])
