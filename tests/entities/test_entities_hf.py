"""The transformers backend, through the real loading code, with tiny BERT token classifiers built here."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from synthvlp.entities import CATEGORIES, EntityExtractor, VocabularyError  # noqa: E402
from synthvlp.entities.hf_backend import decode_bio  # noqa: E402

LABELS = ["O"] + [f"{bio}-{c}" for c in CATEGORIES for bio in "BI"]
WORDS = ["no", "mild", "small", "left", "pneumothorax", "pleural", "effusion", "lungs", "are", "clear", "the",
         "heart", "is", "normal", "cannot", "exclude", "infiltrate", "bibasilar", "atelectasis", ".", ","]


def _save_tiny_bert(folder: Path, marked: dict[str, str], layers: int = 0, id2label: list[str] = LABELS) -> Path:
    """A BERT whose logits depend only on the token: words in `marked` get their label, all others 'O'.
    With `layers` > 0 the weights stay random, as an untrained checkpoint would be."""
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True,
                                               model_max_length=64)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                     num_labels=len(id2label), id2label=dict(enumerate(id2label)),
                                     label2id={lab: i for i, lab in enumerate(id2label)})
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(config)
    if layers == 0:
        with torch.no_grad():
            emb = model.bert.embeddings
            emb.word_embeddings.weight.zero_()
            emb.position_embeddings.weight.zero_()
            emb.token_type_embeddings.weight.zero_()
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[0] = 1.0  # 'O' unless a marked word says otherwise
            vocab = tokenizer.get_vocab()
            for dim, (word, label) in enumerate(marked.items()):
                emb.word_embeddings.weight[vocab[word], dim] = 10.0
                model.classifier.weight[id2label.index(label), dim] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    folder = _save_tiny_bert(tmp_path_factory.mktemp("m") / "tiny-rate-ner", {
        "pneumothorax": "B-ABNORMALITY", "pleural": "B-ABNORMALITY", "effusion": "I-ABNORMALITY",
        "lungs": "B-ANATOMY", "infiltrate": "B-ABNORMALITY", "atelectasis": "I-ABNORMALITY",
        "bibasilar": "B-ABNORMALITY"})
    return EntityExtractor(backend="transformers", model_path=folder, batch_size=2)


def test_model_spans_get_the_shared_assertion_rules(tagged):
    texts = ["No pneumothorax.", "Small left pleural effusion.", "Cannot exclude infiltrate.", "",
             "The lungs are clear.", "Bibasilar atelectasis."]
    out = tagged.extract(texts)
    assert [(m.canonical, m.assertion) for m in out[0]] == [("pneumothorax", "absent")]
    assert [(m.surface, m.canonical, m.assertion, m.laterality) for m in out[1]] == [
        ("pleural effusion", "pleural effusion", "present", "left")]
    assert [(m.canonical, m.assertion) for m in out[2]] == [("infiltrate", "uncertain")]
    assert out[3] == []
    assert [(m.canonical, m.category) for m in out[4]] == [("clear lungs", "NON-ABNORMALITY")]
    assert [(m.surface, m.canonical, m.laterality) for m in out[5]] == [
        ("Bibasilar atelectasis", "atelectasis", "bilateral")]
    for text, mentions in zip(texts, out):
        assert all(text[m.start:m.end] == m.surface for m in mentions)


def test_unlinked_spans_keep_their_text(tmp_path):
    folder = _save_tiny_bert(tmp_path / "m", {"mild": "B-DISEASE", "heart": "I-DISEASE"})
    out = EntityExtractor(backend="transformers", model_path=folder).extract(["No mild heart."])[0]
    assert [(m.canonical, m.category, m.assertion) for m in out] == [("mild heart", "DISEASE", "absent")]


def test_random_checkpoint_and_long_text(tmp_path):
    folder = _save_tiny_bert(tmp_path / "m", {}, layers=1)
    text = " ".join(["no pleural effusion ."] * 40)  # longer than the 64-position window
    out = EntityExtractor(backend="transformers", model_path=folder).extract([text, "The heart is normal."])
    for t, mentions in zip([text, "The heart is normal."], out):
        assert all(t[m.start:m.end] == m.surface and m.category in CATEGORIES for m in mentions)
        assert all(m.assertion in ("present", "absent", "uncertain") for m in mentions)
        spans = sorted((m.start, m.end) for m in mentions)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_bad_model_folders(tmp_path):
    with pytest.raises(ValueError, match="needs model_path"):
        EntityExtractor(backend="transformers")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        EntityExtractor(backend="transformers", model_path=tmp_path)
    folder = _save_tiny_bert(tmp_path / "odd", {}, id2label=["O", "B-FINDING", "I-FINDING"])
    with pytest.raises(VocabularyError, match="id2label has 'B-FINDING'"):
        EntityExtractor(backend="transformers", model_path=folder)


def test_decode_bio():
    text = "no left pleural effusion"
    offsets = [(0, 0), (0, 2), (3, 7), (8, 15), (16, 24), (0, 0)]
    tags = [None, None, ("B", "ANATOMY"), ("I", "ABNORMALITY"), ("I", "ABNORMALITY"), None]
    assert decode_bio(offsets, tags, text) == [(3, 7, "ANATOMY"), (8, 24, "ABNORMALITY")]
