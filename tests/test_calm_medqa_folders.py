"""Both of CALM's MedQA test folders load as ``calm-medqa``: ``test_sft_en_q_1000`` (native
English, options on lines of their own) and ``test_sft_cn_q_1000`` (native Chinese, options
inline on the stem's line, ``... (A) 2小时 (B) 4小时内``), the pivot found from the file names,
the 299-row subsets as ``calm-medqa-299``, and the alignment check run on them.

The fixtures are the first twelve rows of the authors' files (github.com/wangym2/CALM,
data/medqa/test/test_sft_cn_q_1000, commit 9d2bac4), some stems shortened, in their layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.datasets.entry import inline_options
from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig
from calm_rag.pipeline.questions import check_questions
from calm_rag.registries import QUESTION_SOURCES

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "calm-medqa.yaml"
INSTRUCTION = {"zh": "逐步思考选出你认为最正确的选项。\n输出格式：\n"
                     "解释:<你的解释>\n答案:<正确选项>",
               "en": "Please think step by step and select the most suitable choice. Output "
                     "format:\nExplanation:<your reasoning>\nAnswer:<correct choice>",
               "fr": "Veuillez réfléchir étape par étape. Format de sortie :\nExplication :"
                     "<votre raisonnement>\nRéponse :<bon choix>"}

# (gold, {lang: (stem, options)}) for twelve rows, in the release's order.
ROWS: list[tuple[str, dict[str, tuple[str, list[str]]]]] = [
    ("D", {"zh": ("经调查证实出现医院感染流行时，医院应报告当地卫生行政部门的时间是（　　）。",
                  ["2小时", "4小时内", "12小时内", "24小时内"]),
           "en": ("When it is confirmed that there is an epidemic of nosocomial infection, the "
                  "hospital should report it to the local health administration within ( ).",
                  ["Within 2 hours", "Within 4 hours", "Within 12 hours", "Within 24 hours"]),
           "fr": ("Lorsqu'une enquête confirme une épidémie d'infection nosocomiale, l'hôpital "
                  "doit le signaler à l'administration locale de la santé ( ).",
                  ["Dans les 2 heures", "Dans les 4 heures", "Dans les 12 heures",
                   "Dans les 24 heures"])}),
    ("B", {"zh": ("8岁男孩，右肘关节外伤，伤后48小时来院。应诊断为肱骨髁上骨折合并（　　）。",
                  ["主要静脉损伤", "肱动脉损伤", "肌肉断裂伤", "正中、尺、桡神经损伤"]),
           "en": ("An 8-year-old boy injured his right elbow and was admitted 48 hours after "
                  "the injury. It should be diagnosed as supracondylar fracture with ( ).",
                  ["Main vein injury", "Brachial artery injury", "Muscle rupture injury",
                   "Median, ulnar and radial nerve injury"]),
           "fr": ("Un garçon de 8 ans s'est blessé au coude droit et a été admis 48 heures "
                  "après. Il faut diagnostiquer une fracture supracondylienne avec ( ).",
                  ["Lésion de la veine principale", "Lésion de l'artère brachiale",
                   "Lésion par rupture musculaire",
                   "Lésion des nerfs médian, cubital et radial"])}),
    ("C", {"zh": ("最易引起输血后肝炎的病毒是（　　）。", ["HBV", "HAV", "HCV", "HDV"]),
           "en": ("The virus most likely to cause post-transfusion hepatitis is ( ).",
                  ["HBV", "HAV", "HCV", "HDV"]),
           "fr": ("Le virus le plus susceptible de provoquer une hépatite post-transfusionnelle "
                  "est ( ).", ["VHB", "VHA", "VHC", "VHD"])}),
    ("B", {"zh": ("基础代谢率低于正常范围的疾患是（　　）。",
                  ["白血病", "垂体性肥胖症", "中暑", "糖尿病"]),
           "en": ("A disease in which the basal metabolic rate is lower than the normal range "
                  "is ( ).", ["Leukemia", "Pituitary obesity", "Heatstroke", "Diabetes"]),
           "fr": ("Une maladie dans laquelle le métabolisme de base est inférieur à la normale "
                  "est ( ).", ["Leucémie", "Obésité hypophysaire", "Coup de chaleur",
                               "Diabète"])}),
    ("C", {"zh": ("提示胸腔手术后内出血的指征是引流管中每小时引流出血液量持续超过（　　）。",
                  ["150ml", "100ml", "200ml", "500ml"]),
           "en": ("An indication of internal bleeding after thoracic surgery is that the blood "
                  "drained per hour continues to exceed ( ).",
                  ["150ml", "100ml", "200ml", "500ml"]),
           "fr": ("Une indication d'hémorragie interne après une chirurgie thoracique est que le "
                  "sang drainé par heure continue de dépasser ( ).",
                  ["150 ml", "100 ml", "200 ml", "500 ml"])}),
    ("A", {"zh": ("初产妇，23岁，规律宫缩10小时，宫口由6cm开大至7cm，胎心140次/分。恰当的处置应为"
                  "（　　）。", ["严密观察产程进展", "静脉滴注缩宫素", "立即行人工破膜",
                               "立即行剖宫手术"]),
           "en": ("A primiparous woman, 23 years old, had regular contractions for 10 hours; the "
                  "cervix dilated from 6cm to 7cm, fetal heart rate 140 beats/min. The "
                  "appropriate disposal should be ( ).",
                  ["Closely observe the progress of labor", "Inject oxytocin intravenously",
                   "Immediately perform artificial rupture of membranes",
                   "Immediately perform cesarean section"]),
           "fr": ("Une femme primipare de 23 ans a eu des contractions régulières pendant 10 "
                  "heures ; le col s'est dilaté de 6 cm à 7 cm, fréquence cardiaque fœtale 140 "
                  "battements/min. L'élimination appropriée devrait être ( ).",
                  ["Observer attentivement la progression du travail",
                   "Injecter de l'ocytocine par voie intraveineuse",
                   "Effectuer immédiatement une rupture artificielle des membranes",
                   "Effectuer immédiatement une césarienne"])}),
    ("B", {"zh": ("胃癌最主要的转移途径是（　　）。",
                  ["直接蔓延", "淋巴转移", "血行转移", "盆腔转移"]),
           "en": ("The main metastasis pathway of gastric cancer is ( ).",
                  ["Direct spread", "Lymphatic metastasis", "Hematogenous metastasis",
                   "Pelvic metastasis"]),
           "fr": ("La principale voie métastatique du cancer gastrique est ( ).",
                  ["Propagation directe", "Métastases lymphatiques", "Métastases hématogènes",
                   "Métastases pelviennes"])}),
    ("B", {"zh": ("猩红热多在发热后多久出现皮疹（　　）。",
                  ["12小时之内", "12～48小时", "60～72小时", "大于96小时"]),
           "en": ("How long does it take for scarlet fever to appear rash after fever ( ).",
                  ["Within 12 hours", "12～48 hours", "60～72 hours", "More than 96 hours"]),
           "fr": ("Combien de temps faut-il pour que la scarlatine apparaisse après une fièvre "
                  "( ).", ["Dans les 12 heures", "12 ~ 48 heures", "60 ~ 72 heures",
                           "Plus de 96 heures"])}),
    ("D", {"zh": ("患者，男，6岁。胸骨左缘第3～4肋间闻及2～3级粗糙的全收缩期杂音，"
                  "首先考虑为（　　）。",
                  ["二尖瓣狭窄", "主动脉瓣关闭不全", "二尖瓣关闭不全", "室间隔缺损"]),
           "en": ("Patient, male, 6 years old. A grade 2 to 3 holosystolic murmur is heard in the "
                  "3rd to 4th intercostal space; the first consideration is ( ).",
                  ["Mitral stenosis", "Aortic regurgitation", "Mitral regurgitation",
                   "Ventricular septal defect"]),
           "fr": ("Patient, homme, 6 ans. Un souffle holosystolique de grade 2 à 3 est entendu "
                  "dans le 3e au 4e espace intercostal ; la première considération est ( ).",
                  ["Sténose mitrale", "Insuffisance aortique", "Insuffisance mitrale",
                   "Communication interventriculaire"])}),
    ("A", {"zh": ("1．上述哪项是刺激促胰液素分泌最强的刺激因素（　　）。",
                  ["盐酸", "促胃液素", "乙酰胆碱", "糖"]),
           "en": ("1. Which of the above is the strongest factor that stimulates secretin "
                  "secretion ( ).", ["Hydrochloric acid", "Gastrin", "Acetylcholine", "Sugar"]),
           "fr": ("1. Lequel des facteurs ci-dessus stimule le plus la sécrétion de sécrétine "
                  "( ).", ["Acide chlorhydrique", "Gastrine", "Acétylcholine", "Sucre"])}),
    ("A", {"zh": ("急性Q波心肌梗死发病6小时内来诊，首选治疗措施是（　　）。",
                  ["冠状动脉造影及支架植入术", "绝对卧床休息、吸氧", "静脉点滴硝酸甘油",
                   "静脉溶栓治疗"]),
           "en": ("For acute Q-wave myocardial infarction within 6 hours of onset, the preferred "
                  "treatment is ( ).", ["Coronary angiography and stent implantation",
                                        "Absolute bed rest and oxygen inhalation",
                                        "Intravenous nitroglycerin",
                                        "Intravenous thrombolytic treatment"]),
           "fr": ("En cas d'infarctus aigu du myocarde par onde Q dans les 6 heures, le "
                  "traitement préféré est ( ).",
                  ["Angiographie coronarienne et implantation de stent",
                   "Repos au lit absolu et inhalation d'oxygène", "Nitroglycérine intraveineuse",
                   "Traitement thrombolytique intraveineux"])}),
    ("A", {"zh": ("某人的红细胞与B型血的血清凝集，其血清与B型血的红细胞也凝集，"
                  "此人血型为（　　）。",
                  ["A型", "AB型", "B型", "Rh型"]),
           "en": ("A person's red blood cells agglutinate with the serum of type B blood, and "
                  "his serum with type B red blood cells. This person's blood type is ( ).",
                  ["Type A", "Type AB", "Type B", "Type Rh"]),
           "fr": ("Les globules rouges d'une personne s'agglutinent avec le sérum du sang de "
                  "type B, et son sérum avec les globules rouges de type B. Son groupe sanguin "
                  "est ( ).", ["Type A", "Type AB", "Type B", "Type Rh"])}),
]
CN_FOLDER = {"zh": "testset_native_cn.json", "en": "testset_cn2en.json",
             "fr": "all_test_cn2fr.json"}
CN_SUBSET = {"zh": "test_native_cn_299.json", "en": "test_cn2en_299.json"}
EN_FOLDER = {"en": "all_test_native_en.json", "zh": "all_test_en2cn.json",
             "fr": "all_test_en2fr.json"}


def inline_row(gold: str, stem: str, options: list[str], lang: str, full_width: bool = False
               ) -> dict[str, str]:
    """One Alpaca row as in test_sft_cn_q_1000: the options run on after the stem."""
    opening, closing = ("（", "）") if full_width else ("(", ") ")
    run = "".join(f" {opening}{letter}{closing}{text}" for letter, text in zip("ABCD", options,
                                                                                strict=False))
    gold_text = options["ABCD".index(gold)]
    return {"instruction": INSTRUCTION[lang], "input": f"{stem}{run} ",
            "output": f"({gold}) {gold_text}"}


def lines_row(gold: str, stem: str, options: list[str], lang: str) -> dict[str, str]:
    """One Alpaca row as in test_sft_en_q_1000: one option a line."""
    listed = "".join(f"\n({letter}) {text}" for letter, text in zip("ABCD", options,
                                                                     strict=False))
    return {"instruction": INSTRUCTION[lang], "input": f"{stem}{listed}\n",
            "output": f"({gold}) {options['ABCD'.index(gold)]}"}


def write_folder(folder: Path, names: dict[str, str], make=inline_row, rows: int = 12,
                 repeat: tuple[str, int] | None = None) -> Path:
    """A release folder: one JSON array a language. ``repeat=(lang, k)`` writes that
    language's row k twice (a duplicated row: every row after it shifted by one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang, name in names.items():
        out = []
        for k, (gold, texts) in enumerate(ROWS[:rows]):
            # One native Chinese row with full-width labels, （A）, as some releases write them.
            wide = make is inline_row and lang == "zh" and k == 6
            row = make(gold, *texts[lang], lang, full_width=True) if wide else make(
                gold, *texts[lang], lang)
            out += [row, row] if repeat == (lang, k) else [row]
        (folder / name).write_text(json.dumps(out, ensure_ascii=False, indent=2),
                                   encoding="utf-8")
    return folder


def check(folder: Path, *more: str) -> int:
    return main(["run", str(PIPELINE), "--check", "--set", f"data.path={folder}",
                 "--set", "data.train=6", "--set", "data.heldout=3", *more])


def data(folder: Path, source: str = "calm-medqa", languages=("en", "zh", "fr")) -> DataConfig:
    return DataConfig(source=source, path=str(folder), languages=tuple(languages))


# ---------------------------------------------------------------------------------------------
# Options inline on one line


def test_options_on_the_stems_line_in_each_language():
    stem, options = inline_options("最易引起输血后肝炎的病毒是（　　）。 "
                                   "(A) HBV (B) HAV (C) HCV (D) HDV ")
    assert (stem, options) == ("最易引起输血后肝炎的病毒是（　　）。",
                               {"A": "HBV", "B": "HAV", "C": "HCV", "D": "HDV"})
    stem, options = inline_options("The virus most likely to cause it is ( ). (A) HBV (B) HAV "
                                   "(C) HCV (D) HDV")
    assert stem == "The virus most likely to cause it is ( )." and options["D"] == "HDV"
    _, options = inline_options("Le virus est ( ). (A) Dans les 2 heures (B) 12 ~ 48 heures")
    assert options == {"A": "Dans les 2 heures", "B": "12 ~ 48 heures"}


def test_full_width_labels_and_parentheses_inside_options():
    stem, options = inline_options("3．DIC继发性纤溶亢进期（　　）。"
                                   "（A）血小板增加（B）纤维蛋白原降低（C）PT缩短（D）3P试验（+）")
    assert stem == "3．DIC继发性纤溶亢进期（　　）。"
    assert options == {"A": "血小板增加", "B": "纤维蛋白原降低", "C": "PT缩短", "D": "3P试验（+）"}
    _, options = inline_options("腺垂体功能减退症最常见原因是（　　）。 (A) 希恩（Sheehan）综合征 "
                                "(B) 各种垂体肿瘤 (C) 原发性空蝶鞍症 (D) 糖尿病血管病变 ")
    assert options["A"] == "希恩（Sheehan）综合征" and len(options) == 4


def test_a_stem_that_mentions_a_label_keeps_it_in_the_stem():
    stem, options = inline_options("Blood group (A) antigens are found on ( ). (A) red cells "
                                   "(B) plasma (C) platelets\nAnswer:")
    assert stem == "Blood group (A) antigens are found on ( )."
    assert options == {"A": "red cells", "B": "plasma", "C": "platelets"}  # the cue dropped


def test_inline_options_on_a_line_of_their_own_and_lines_as_before():
    assert inline_options("Where?\n(A) home (B) school (C) park") == (
        "Where?", {"A": "home", "B": "school", "C": "park"})
    assert inline_options("Question: Where?\n(A) home\n(B) school\nAnswer:") == (
        "Where?", {"A": "home", "B": "school"})
    with pytest.raises(InputError, match="no options"):
        inline_options("A question without options (A) only one")


# ---------------------------------------------------------------------------------------------
# Both folders, their pivots and subsets


def test_the_native_chinese_folder_loads_with_chinese_as_pivot(tmp_path, capsys):
    folder = write_folder(tmp_path / "test_sft_cn_q_1000", CN_FOLDER)
    assert check(folder) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^  ([a-z-]+): \d+ rows", out, re.MULTILINE)
    assert listed == ["zh", "en", "fr"]  # the pivot first, though data.languages says en first
    assert f"zh: 12 rows  {folder / 'testset_native_cn.json'}" in out
    assert "12 questions line up in every language" in out
    entry = QUESTION_SOURCES.get("calm-medqa")
    assert entry.pivot(data(folder), ".") == "zh"


def test_the_chinese_folders_questions_are_read_in_full(tmp_path):
    folder = write_folder(tmp_path / "cn", CN_FOLDER)
    questions = check_questions(data(folder), ".").questions
    assert len(questions) == 36
    first = {q.lang: q for q in questions if q.id == questions[0].id}
    assert first["zh"].stem == ("经调查证实出现医院感染流行时，"
                                "医院应报告当地卫生行政部门的时间是（　　）。")
    assert first["zh"].options == {"A": "2小时", "B": "4小时内", "C": "12小时内", "D": "24小时内"}
    assert first["en"].options["D"] == "Within 24 hours"
    assert {q.answer for q in first.values()} == {"D"}
    wide = [q for q in questions if q.lang == "zh" and q.options["A"] == "直接蔓延"]
    assert len(wide) == 1 and wide[0].options["D"] == "盆腔转移" and wide[0].answer == "B"


def test_a_shifted_row_in_the_chinese_folder_is_found(tmp_path, capsys):
    folder = write_folder(tmp_path / "cn", CN_FOLDER, repeat=("fr", 4))
    assert check(folder) == 2  # misaligned: stop, as calm-medqa.yaml says
    err = capsys.readouterr().err
    assert "all_test_cn2fr.json" in err
    assert check(folder, "--set", "data.misaligned=drop") == 0
    out = capsys.readouterr().out
    assert "all_test_cn2fr.json" in out


def test_the_native_english_folder_keeps_english_as_pivot(tmp_path, capsys):
    folder = write_folder(tmp_path / "test_sft_en_q_1000", EN_FOLDER, make=lines_row)
    assert check(folder, "--set", "data.languages=[zh, fr, en]") == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^  ([a-z-]+): \d+ rows", out, re.MULTILINE)
    assert listed == ["en", "zh", "fr"]
    assert QUESTION_SOURCES.get("calm-medqa").pivot(data(folder), ".") == "en"


def test_the_299_row_subsets(tmp_path, capsys):
    folder = write_folder(tmp_path / "cn", {**CN_FOLDER, **CN_SUBSET}, rows=5)
    assert check(folder, "--set", "data.source=calm-medqa-299", "--set",
                 "data.languages=[en, zh]", "--set", "data.train=3", "--set",
                 "data.heldout=2") == 0
    out = capsys.readouterr().out
    assert f"zh: 5 rows  {folder / 'test_native_cn_299.json'}" in out
    assert f"en: 5 rows  {folder / 'test_cn2en_299.json'}" in out
    with pytest.raises(InputError, match="has no fr questions"):
        check_questions(data(folder, "calm-medqa-299"), ".")


def test_a_folder_of_both_releases_or_of_neither_is_refused(tmp_path):
    both = write_folder(tmp_path / "both", CN_FOLDER)
    write_folder(both, EN_FOLDER, make=lines_row)
    with pytest.raises(InputError, match="cannot be told"):
        check_questions(data(both), ".")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="all_test_native_en.json .native en. or "
                                         "testset_native_cn.json .native zh."):
        check_questions(data(empty), ".")


def test_a_missing_translation_names_its_file(tmp_path):
    folder = write_folder(tmp_path / "cn", {"zh": CN_FOLDER["zh"], "en": CN_FOLDER["en"]})
    with pytest.raises(InputError, match="no calm-medqa file of fr") as err:
        check_questions(data(folder), ".")
    assert err.value.path == str(folder / "all_test_cn2fr.json")
