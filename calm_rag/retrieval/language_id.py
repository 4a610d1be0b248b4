"""Telling a document's language: a script check for CJK text, py3langid for the rest."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from calm_rag.errors import InputError

SAMPLE_CHARS = 2000
# Below three words py3langid guesses ("Risposta: B" reads as Afrikaans, "aspirin dose" as
# Kurdish): such a text is left unidentified rather than given a wrong language.
MIN_WORDS = 3
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
UNDETERMINED = "und"


def language_code(code: str) -> str:
    """A language code as calm_rag writes it: the registry's code (``cn`` → ``zh``) when the
    language is known there, else the lower-cased code (a corpus may hold any language)."""
    from calm_rag.languages import normalize_code

    try:
        return normalize_code(code)
    except InputError:
        return str(code).strip().lower()


def detect_language(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language (``"zh-hant"`` for traditional Chinese);
    ``"und"`` when it has no letters, or fewer than MIN_WORDS words outside CJK scripts (too
    short for the identifier to tell)."""
    sample = text[:SAMPLE_CHARS]
    by_script = _cjk_language(sample)
    if by_script:
        return by_script
    if len(_WORD.findall(sample)) < MIN_WORDS:
        return UNDETERMINED
    # py3langid loads its model (about a second) on first use: only for non-CJK text.
    import py3langid

    code, _ = py3langid.classify(sample)
    return language_code(code)


def written_in(text: str, code: str) -> bool:
    """Whether the identifier finds ``text`` in the language ``code`` (a registry code).

    Chinese text that no character places in one script ("答案是 B") counts as either. A
    text too short to identify ("Risposta: B") is in no language: a check that keeps texts
    in their language keeps only those it can tell.
    """
    found = detect_language(text)
    if found == code:
        return True
    chinese = {"zh", "zh-hant"}
    return found in chinese and code in chinese and _script_counts(text[:SAMPLE_CHARS]) == (0, 0)


def _cjk_language(sample: str) -> str | None:
    """Kana means Japanese and Hangul Korean; Han alone means Chinese, in one of its two
    scripts. Statistical detectors often call kanji-heavy Japanese Chinese, which the script
    settles at once.

    The text is CJK when its CJK characters, two to a word, are at least as many words as the
    other letters make: "此病人最可能為 Cushing syndrome" is Chinese with an English term in it
    (counted letter by letter, the term outweighed the Chinese).
    """
    counts: Counter[str] = Counter()
    in_word = False
    for ch in sample:
        kind = _letter_kind(ch)
        if kind == "other" and not in_word:
            counts["words"] += 1  # a run of other letters is one word
        elif kind in ("kana", "hangul", "han"):
            counts[kind] += 1
        in_word = kind == "other"
    kana, hangul, han = counts["kana"], counts["hangul"], counts["han"]
    if not kana + hangul + han or (kana + hangul + han) / 2 < counts["words"]:
        return None
    if kana:
        return "ja"
    if hangul > han:
        return "ko"
    return _chinese_script(sample)


def _letter_kind(ch: str) -> str | None:
    """kana, hangul, han, other (a letter of another script), or None (not a letter)."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "kana"
    if name.startswith("HANGUL"):
        return "hangul"
    return "han" if name.startswith("CJK") else "other"


# Frequent characters that only traditional Chinese writes, each beside the simplified form
# that replaced it. A text in one script holds none of the other's: which set it draws from
# tells the two apart (a table, not a model: both scripts share most characters, and
# statistical detectors answer "zh" for either).
SCRIPT_PAIRS = (
    "這这 個个 們们 為为 說说 時时 來来 對对 會会 國国 學学 醫医 體体 與与 還还 發发 經经 "
    "種种 現现 動动 療疗 藥药 無无 問问 題题 關关 應应 過过 開开 長长 見见 實实 當当 點点 "
    "嗎吗 從从 間间 頭头 氣气 義义 樣样 進进 機机 變变 認认 論论 讓让 難难 話话 語语 電电 "
    "車车 愛爱 歲岁 診诊 斷断 臨临 腦脑 腎肾 臟脏 壓压 細细 腫肿 級级 選选 擇择 項项 確确 "
    "錯错 釋释 該该 適适 險险 蟲虫 葉叶 區区 處处 錢钱 買买 賣卖 東东 風风 飛飞 馬马 魚鱼 "
    "鳥鸟 門门 聽听 讀读 寫写 書书 畫画 業业 產产 歷历 條条 紅红 綠绿 黃黄 熱热 傳传 師师 "
    "員员 單单 總总 萬万 術术 務务 屬属 據据 環环 節节 號号 標标 極极 樂乐 導导 設设 計计 "
    "記记 識识 證证 護护 檢检 驗验 腸肠 膽胆 脈脉 傷伤 潰溃 瘍疡 頸颈 臉脸 齒齿 覺觉 嬰婴 "
    "婦妇 劑剂 靜静 輸输 結结 盡尽 維维 歸归 陽阳 陰阴 錄录 顯显 類类 質质 嚴严 減减 壞坏"
).split()
TRADITIONAL = frozenset(pair[0] for pair in SCRIPT_PAIRS)
SIMPLIFIED = frozenset(pair[1] for pair in SCRIPT_PAIRS)


def _chinese_script(sample: str) -> str:
    """``zh-hant`` for traditional Chinese, ``zh`` for simplified (and for text that gives no
    sign of either)."""
    traditional, simplified = _script_counts(sample)
    return "zh-hant" if traditional > simplified else "zh"


def _script_counts(sample: str) -> tuple[int, int]:
    """How many characters of ``sample`` only traditional, and only simplified, Chinese write."""
    return (sum(ch in TRADITIONAL for ch in sample), sum(ch in SIMPLIFIED for ch in sample))

