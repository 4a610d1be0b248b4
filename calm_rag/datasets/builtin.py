"""The benchmarks calm_rag knows by name (``data.source``), each one :class:`DatasetEntry`.

Local releases take ``data.path`` (the release folder, or a template with ``{lang}``); hub
entries read the hub, or the local copy ``data.path`` names. An experiment adds its own with
``data.entry`` (the same keys).
"""

from __future__ import annotations

from dataclasses import replace

from calm_rag.datasets.entry import DatasetEntry
from calm_rag.registries import QUESTION_SOURCES

# X-CSQA's rows, on disk and on the hub: {id, lang, question: {stem, choices}, answerKey}.
_XCSQA = DatasetEntry(id="id", parallel="id", stem="question.stem",
                      options=("question.choices",), answer="answerKey")
_XCSQA_LANGS = ("en", "zh", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "ar", "vi",
                "hi", "sw", "ur")
# CALM's MedQA files (Alpaca JSON, options in the input), each named after its language pair.
_CALM_MEDQA = DatasetEntry(loader="json", path="{lang}.json", stem="input",
                           options_in_stem=True, answer="output")
_MMMLU_CODES = {"ar": "AR_XY", "bn": "BN_BD", "de": "DE_DE", "es": "ES_LA", "fr": "FR_FR",
                "hi": "HI_IN", "id": "ID_ID", "it": "IT_IT", "ja": "JA_JP", "ko": "KO_KR",
                "pt": "PT_BR", "sw": "SW_KE", "yo": "YO_NG", "zh": "ZH_CN"}

ENTRIES: dict[str, DatasetEntry] = {
    "xcsqa": replace(
        _XCSQA, loader="jsonl", path="{lang}/dev.jsonl", codes={"ja": "jap"}, only=_XCSQA_LANGS,
        description="XCSR's X-CSQA release: data.path is its X-CSQA folder ({lang}/dev.jsonl, "
                    "Japanese in jap/)"),
    "xcsqa-hub": replace(
        _XCSQA, loader="hub", name="INK-USC/xcsr", config="X-CSQA-{lang}", split="validation",
        codes={"ja": "jap"}, only=_XCSQA_LANGS,
        description="X-CSQA on the hub (choices as {label: [...], text: [...]})"),
    "medqa": DatasetEntry(
        loader="jsonl", answer="answer_idx",
        description="MedQA-format files parallel by position: data.path with {lang}, e.g. "
                    "data/medqa/{lang}/test.jsonl"),
    "medqa-release": DatasetEntry(
        loader="jsonl", path="questions/{lang}/4_options/phrases_no_exclude_test.jsonl",
        codes={"en": "US", "zh": "Mainland"}, only=("en", "zh"), parallel="none",
        answer="answer_idx",
        description="MedQA's release (data.path: data_clean): US and Mainland are different "
                    "question sets, one language a run"),
    "medqa-taiwan": DatasetEntry(
        loader="jsonl", path="questions/Taiwan/test.jsonl", only=("zh-hant",), parallel="none",
        answer="answer_idx",
        description="MedQA's Taiwan test set (data.path: data_clean), traditional Chinese "
                    "(zh-hant); with its translations: medqa-taiwan-translated"),
    "medqa-taiwan-translated": DatasetEntry(
        loader="jsonl", path="questions/Taiwan/{lang}.jsonl",
        codes={"zh-hant": "test", "en": "tw_translated_jsonl/en/test-2en",
               "zh": "tw_translated_jsonl/zh/test-2zh"}, only=("zh-hant", "en", "zh"),
        answer="answer_idx",
        description="MedQA's Taiwan test set (traditional Chinese, zh-hant) with the "
                    "release's English and simplified Chinese translations of it (data.path: "
                    "data_clean), parallel by position"),
    "medqa-gbaker": DatasetEntry(
        loader="hub", name="GBaker/MedQA-USMLE-4-options", only=("en",), parallel="none",
        answer="answer_idx", description="MedQA USMLE 4 options on the hub (English only)"),
    "medqa-bigbio": DatasetEntry(
        loader="hub", name="bigbio/med_qa", config="med_qa_{lang}_4options_source",
        only=("en", "zh"), parallel="none", answer="answer_idx",
        description="bigbio's MedQA (options as [{key, value}]); en and zh are different sets"),
    "calm-xcsqa": DatasetEntry(
        loader="json", path="x_csqa_{lang}_test.json", codes={"zh": "cn"},
        only=("en", "zh", "de", "fr", "it", "ja"), stem="input", options_in_stem=True,
        answer="output",
        description="CALM's X-CSQA test files (data.path: their folder), parallel by position"),
    "calm-medqa": replace(
        _CALM_MEDQA, only=("en", "zh", "fr"),
        layouts={"en": {"en": "all_test_native_en", "zh": "all_test_en2cn",
                        "fr": "all_test_en2fr"},
                 "zh": {"zh": "testset_native_cn", "en": "testset_cn2en",
                        "fr": "all_test_cn2fr"}},
        description="CALM's MedQA test files, 1000 rows parallel by position (data.path: "
                    "test_sft_en_q_1000, native English with Chinese and French "
                    "translations, or test_sft_cn_q_1000, native Chinese with English and "
                    "French); the native language, found from the file names, is the pivot "
                    "(listed first); calm-medqa-299 reads the 299-row subsets"),
    "calm-medqa-299": replace(
        _CALM_MEDQA, only=("en", "zh"),
        layouts={"en": {"en": "test_native_en_299", "zh": "test_en2cn_299"},
                 "zh": {"zh": "test_native_cn_299", "en": "test_cn2en_299"}},
        description="CALM's 299-row MedQA subsets (data.path: test_sft_en_q_1000 or "
                    "test_sft_cn_q_1000; English and Chinese, no French), the native "
                    "language the pivot (listed first), parallel by position"),
    "mmmlu": DatasetEntry(
        loader="hub", name="openai/MMMLU", config="{lang}", codes=_MMMLU_CODES,
        only=tuple(_MMMLU_CODES), stem="Question", options=("A", "B", "C", "D"),
        answer="Answer",
        description="OpenAI's MMMLU (14 translations of MMLU's test set, no English), "
                    "parallel by position"),
    "global-mmlu": DatasetEntry(
        loader="hub", name="CohereLabs/Global-MMLU", config="{lang}", id="sample_id",
        parallel="id", options=("option_a", "option_b", "option_c", "option_d"),
        description="Cohere Labs' Global-MMLU (42 languages, configs by language code; "
                    "CohereForAI/Global-MMLU before the rename)"),
}

for _name, _entry in ENTRIES.items():
    QUESTION_SOURCES.register(_name, _entry)
