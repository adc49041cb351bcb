from __future__ import annotations

import json

import spacy

from spacy_bioselecttune.engine import generate as generate_module


class AcronymAwareGenerator:
    """Names the long form and the abbreviation of a disease wherever a sentence has them."""

    def __init__(self, **settings) -> None:
        pass

    def generate(self, prompts):
        names = ("chronic kidney disease", "CKD")
        texts = [prompt.split("Text: ")[1] for prompt in prompts]
        return [json.dumps([{"entity": "Disease", "name": name} for name in names if name in text]) for text in texts]


def test_scispacy_abbreviation_detector_runs_beside_the_component(monkeypatch):
    from scispacy.abbreviation import AbbreviationDetector  # noqa: F401  (registers the factory)

    monkeypatch.setattr(generate_module, "Generator", AcronymAwareGenerator)
    nlp = spacy.blank("en")
    nlp.add_pipe("abbreviation_detector")
    nlp.add_pipe("bioselecttune_ner", config={"labels": ["Disease"]})
    text = "Patients with chronic kidney disease (CKD) were enrolled. CKD progressed in ten."
    doc = nlp(text)
    assert [(ent.text, ent.label_) for ent in doc.ents] == [("chronic kidney disease", "Disease"), ("CKD", "Disease"), ("CKD", "Disease")]
    assert all(text[ent.start_char : ent.end_char] == ent.text for ent in doc.ents)
    assert [(str(abbr), str(abbr._.long_form)) for abbr in doc._.abbreviations][0] == ("CKD", "chronic kidney disease")
    assert doc.user_data["bioselecttune"]["sentences"] == 2
