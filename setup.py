from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="spacy-bioselecttune",
    version="0.1.0",
    description="Biomedical NER with fine-tuned LLMs (BioSelectTune) as a spaCy component",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["spacy_bioselecttune", "spacy_bioselecttune.*"]),
    package_data={"spacy_bioselecttune": ["py.typed", "adapters/*/*", "adapters/*/records/*/*"]},
    python_requires=">=3.9",
    install_requires=[
        "spacy>=3.7,<3.9",
        "spacy-llm>=0.7,<0.8",
        "thinc>=8.2,<9",
        "torch>=2.1",
        "transformers>=4.46",
        "peft>=0.12",
        "safetensors>=0.4",
        "gguf>=0.10",
        "typer>=0.9",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={
        "console_scripts": ["bioselecttune = spacy_bioselecttune.cli:app"],
        "spacy_factories": ["bioselecttune_ner = spacy_bioselecttune.pipeline.component:make_bioselecttune_ner"],
        "spacy_readers": ["bioselecttune.Corpus.v1 = spacy_bioselecttune.pipeline.readers:create_corpus_reader"],
        "spacy_scorers": ["bioselecttune.Scorer.v1 = spacy_bioselecttune.pipeline.scorer:make_bioselecttune_scorer"],
        "thinc_llm_tasks": ["bioselecttune.NER.v1 = spacy_bioselecttune.pipeline.llm:make_ner_task"],
        "thinc_llm_models": ["bioselecttune.HF.v1 = spacy_bioselecttune.pipeline.llm:make_hf_model"],
    },
    classifiers=[
        "Framework :: spaCy",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Programming Language :: Python :: 3",
    ],
)
