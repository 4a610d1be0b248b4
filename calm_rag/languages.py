"""Language registry: codes and aliases, localized instructions, markers, headings and hints.

All language knowledge lives here: the one ``_TABLE`` of the languages questions are asked in
(adding one is adding one entry), and :data:`STOPWORD_LISTS` for the languages a corpus may be
written in. Code elsewhere only looks things up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calm_rag.errors import InputError


@dataclass(frozen=True)
class Language:
    """One language: how to name it, how to instruct the model, how to read its answers."""

    code: str
    """ISO 639-1 code, e.g. ``"zh"``; with its script where a language is written two ways
    (``"zh-hant"``, traditional Chinese)."""
    name: str
    """English name."""
    native_name: str
    aliases: tuple[str, ...]
    """Lower-case alternative codes and names (``"cn"``, ``"jap"``, ``"chinese"``)."""
    instruction: str
    """The task, in this language, with a ``{letters}`` placeholder and the output format."""
    question_marker: str
    """Localized ``"Question:"``."""
    explanation_markers: tuple[str, ...]
    """Markers that open the explanation; the first is the one the instruction shows."""
    answer_markers: tuple[str, ...]
    """Markers that introduce the answer letter; the first is the one the instruction shows."""
    context_heading: str = "Context:"
    """The heading above the retrieved passages in a prompt."""
    answer_hint: str = "The correct answer is {letter}. Explain why, in {language}."
    """The follow-up of ``chosen_fallback: regenerate``: gives the answer (``{letter}``) and
    asks why, in the language (``{language}``: its native name). The instruction above it
    already asks for the "Answer: <letter>" ending; quoting it here made a 135M model echo it."""
    letter_separator: str = ", "
    """Joins all but the last two labels of a list ("A, B, C")."""
    letter_or: str = " or "
    """Joins the last two labels ("D or E"), spaces included where the language uses them."""

    def letters(self, labels: Sequence[str]) -> str:
        """The labels as a localized list: ``"A, B, C, D or E"``."""
        labels = list(labels)
        if len(labels) <= 1:
            return "".join(labels)
        return self.letter_separator.join(labels[:-1]) + self.letter_or + labels[-1]


_TABLE: tuple[Language, ...] = (
    Language(
        code="en",
        name="English",
        native_name="English",
        aliases=("eng", "english", "en-us", "en-gb"),
        instruction=(
            "Answer the following multiple-choice question. Give a short explanation, then exactly "
            "ONE option letter ({letters}). Output format:\n"
            "Explanation: <your explanation>\nAnswer: <option letter>"
        ),
        question_marker="Question:",
        explanation_markers=("Explanation:",),
        answer_markers=("Answer:", "Correct answer:", "Final answer:"),
        context_heading="Context:",
        answer_hint="The correct answer is {letter}. Explain why, in English.",
    ),
    Language(
        code="zh",
        name="Chinese",
        native_name="中文",
        aliases=("cn", "zh-cn", "zh-hans", "zh-sg", "zho", "chi", "chinese",
                 "simplified chinese"),
        instruction=(
            "回答下面的单项选择题。先给出简短的解释，然后只给出一个选项字母（{letters}）。输出格式：\n"
            "解释:<你的解释>\n答案:<选项字母>"
        ),
        question_marker="问题:",
        explanation_markers=("解释:", "解释：", "解析:", "解析：", "說明:", "解釋:"),
        answer_markers=("答案:", "答案：", "正确答案:", "答:", "答："),
        context_heading="参考资料:",
        answer_hint="正确答案是 {letter}。请用中文解释原因。",
        letter_separator="、",
        letter_or=" 或 ",
    ),
    Language(
        code="de",
        name="German",
        native_name="Deutsch",
        aliases=("ger", "deu", "german", "deutsch"),
        instruction=(
            "Beantworten Sie die folgende Multiple-Choice-Frage. Geben Sie eine kurze Erklärung und "
            "danach genau EINEN Buchstaben einer Antwortoption an ({letters}). Ausgabeformat:\n"
            "Erklärung: <Ihre Erklärung>\nAntwort: <Buchstabe der Option>"
        ),
        question_marker="Frage:",
        explanation_markers=("Erklärung:", "Erläuterung:", "Begründung:"),
        answer_markers=("Antwort:", "Richtige Antwort:"),
        context_heading="Kontext:",
        answer_hint="Die richtige Antwort ist {letter}. Erkläre auf Deutsch, warum.",
        letter_or=" oder ",
    ),
    Language(
        code="es",
        name="Spanish",
        native_name="Español",
        aliases=("spa", "spanish", "español", "espanol"),
        instruction=(
            "Responde a la siguiente pregunta de opción múltiple. Da una breve explicación y después "
            "exactamente UNA letra de opción ({letters}). Formato de salida:\n"
            "Explicación: <tu explicación>\nRespuesta: <letra de la opción>"
        ),
        question_marker="Pregunta:",
        explanation_markers=("Explicación:",),
        answer_markers=("Respuesta:", "Respuesta correcta:"),
        context_heading="Contexto:",
        answer_hint="La respuesta correcta es {letter}. Explica en español por qué.",
        letter_or=" o ",
    ),
    Language(
        code="fr",
        name="French",
        native_name="Français",
        aliases=("fre", "fra", "french", "français", "francais"),
        instruction=(
            "Répondez à la question à choix multiples suivante. Donnez une brève explication, puis "
            "exactement UNE lettre d'option ({letters}). Format de sortie :\n"
            "Explication: <votre explication>\nRéponse: <lettre de l'option>"
        ),
        question_marker="Question:",
        explanation_markers=("Explication:", "Explication :"),
        answer_markers=("Réponse:", "Réponse :", "Bonne réponse:"),
        context_heading="Contexte:",
        answer_hint="La bonne réponse est {letter}. Explique en français pourquoi.",
        letter_or=" ou ",
    ),
    Language(
        code="it",
        name="Italian",
        native_name="Italiano",
        aliases=("ita", "italian", "italiano"),
        instruction=(
            "Rispondi alla seguente domanda a scelta multipla. Fornisci una breve spiegazione, poi "
            "esattamente UNA lettera di opzione ({letters}). Formato di output:\n"
            "Spiegazione: <la tua spiegazione>\nRisposta: <lettera dell'opzione>"
        ),
        question_marker="Domanda:",
        explanation_markers=("Spiegazione:",),
        answer_markers=("Risposta:", "Risposta corretta:"),
        context_heading="Contesto:",
        answer_hint="La risposta corretta è {letter}. Spiega in italiano perché.",
        letter_or=" o ",
    ),
    Language(
        code="ja",
        name="Japanese",
        native_name="日本語",
        aliases=("jap", "jp", "jpn", "japanese"),
        instruction=(
            "次の多肢選択問題に答えてください。簡潔な説明を書いたあと、選択肢の記号（{letters}）を"
            "一つだけ答えてください。出力形式:\n説明:<あなたの説明>\n答え:<選択肢の記号>"
        ),
        question_marker="質問:",
        explanation_markers=("説明:", "説明：", "解説:"),
        answer_markers=("答え:", "回答:", "答え：", "回答：", "正解:"),
        context_heading="参考資料:",
        answer_hint="正解は {letter} です。その理由を日本語で説明してください。",
        letter_separator="、",
        letter_or="または",
    ),
    Language(
        code="nl",
        name="Dutch",
        native_name="Nederlands",
        aliases=("dut", "nld", "dutch", "nederlands"),
        instruction=(
            "Beantwoord de volgende meerkeuzevraag. Geef een korte uitleg en daarna precies ÉÉN "
            "letter van een antwoordoptie ({letters}). Uitvoerformaat:\n"
            "Uitleg: <je uitleg>\nAntwoord: <letter van de optie>"
        ),
        question_marker="Vraag:",
        explanation_markers=("Uitleg:", "Verklaring:"),
        answer_markers=("Antwoord:", "Juiste antwoord:"),
        context_heading="Context:",
        answer_hint="Het juiste antwoord is {letter}. Leg in het Nederlands uit waarom.",
        letter_or=" of ",
    ),
    Language(
        code="pl",
        name="Polish",
        native_name="Polski",
        aliases=("pol", "polish", "polski"),
        instruction=(
            "Odpowiedz na poniższe pytanie jednokrotnego wyboru. Podaj krótkie wyjaśnienie, a "
            "następnie dokładnie JEDNĄ literę odpowiedzi ({letters}). Format odpowiedzi:\n"
            "Wyjaśnienie: <twoje wyjaśnienie>\nOdpowiedź: <litera odpowiedzi>"
        ),
        question_marker="Pytanie:",
        explanation_markers=("Wyjaśnienie:",),
        answer_markers=("Odpowiedź:", "Poprawna odpowiedź:"),
        context_heading="Kontekst:",
        answer_hint="Poprawna odpowiedź to {letter}. Wyjaśnij po polsku dlaczego.",
        letter_or=" lub ",
    ),
    Language(
        code="pt",
        name="Portuguese",
        native_name="Português",
        aliases=("por", "portuguese", "português", "portugues", "pt-br", "pt-pt"),
        instruction=(
            "Responda à seguinte pergunta de múltipla escolha. Dê uma breve explicação e, em "
            "seguida, exatamente UMA letra de opção ({letters}). Formato de saída:\n"
            "Explicação: <sua explicação>\nResposta: <letra da opção>"
        ),
        question_marker="Pergunta:",
        explanation_markers=("Explicação:",),
        answer_markers=("Resposta:", "Resposta correta:"),
        context_heading="Contexto:",
        answer_hint="A resposta correta é {letter}. Explique em português por quê.",
        letter_or=" ou ",
    ),
    Language(
        code="ru",
        name="Russian",
        native_name="Русский",
        aliases=("rus", "russian", "русский"),
        instruction=(
            "Ответьте на следующий вопрос с несколькими вариантами ответа. Дайте краткое объяснение, "
            "а затем "
            "ровно ОДНУ букву варианта ответа ({letters}). Формат вывода:\n"
            "Объяснение: <ваше объяснение>\nОтвет: <буква варианта>"
        ),
        question_marker="Вопрос:",
        explanation_markers=("Объяснение:", "Пояснение:"),
        answer_markers=("Ответ:", "Правильный ответ:"),
        context_heading="Контекст:",
        answer_hint="Правильный ответ — {letter}. Объясните по-русски почему.",
        letter_or=" или ",
    ),
    Language(
        code="ar",
        name="Arabic",
        native_name="العربية",
        aliases=("ara", "arabic"),
        instruction=(
            "أجب عن سؤال الاختيار من متعدد التالي. قدّم شرحًا موجزًا، ثم حرفًا واحدًا فقط من حروف "
            "الخيارات ({letters}). صيغة الإخراج:\nالشرح: <شرحك>\nالإجابة: <حرف الخيار>"
        ),
        question_marker="السؤال:",
        explanation_markers=("الشرح:", "التفسير:"),
        answer_markers=("الإجابة:", "الجواب:", "الإجابة الصحيحة:"),
        context_heading="السياق:",
        answer_hint="الإجابة الصحيحة هي {letter}. اشرح السبب باللغة العربية.",
        letter_separator="، ",
        letter_or=" أو ",
    ),
    Language(
        code="vi",
        name="Vietnamese",
        native_name="Tiếng Việt",
        aliases=("vie", "vietnamese", "tiếng việt"),
        instruction=(
            "Hãy trả lời câu hỏi trắc nghiệm sau. Giải thích ngắn gọn, sau đó đưa ra đúng MỘT chữ "
            "cái của phương án ({letters}). Định dạng đầu ra:\n"
            "Giải thích: <lời giải thích của bạn>\nĐáp án: <chữ cái của phương án>"
        ),
        question_marker="Câu hỏi:",
        explanation_markers=("Giải thích:",),
        answer_markers=("Đáp án:", "Câu trả lời:", "Trả lời:"),
        context_heading="Ngữ cảnh:",
        answer_hint="Đáp án đúng là {letter}. Hãy giải thích bằng tiếng Việt vì sao.",
        letter_or=" hoặc ",
    ),
    Language(
        code="hi",
        name="Hindi",
        native_name="हिन्दी",
        aliases=("hin", "hindi"),
        instruction=(
            "निम्नलिखित बहुविकल्पीय प्रश्न का उत्तर दीजिए। पहले संक्षिप्त व्याख्या दीजिए, फिर केवल एक "
            "विकल्प का अक्षर ({letters}) लिखिए। आउटपुट प्रारूप:\n"
            "व्याख्या: <आपकी व्याख्या>\nउत्तर: <विकल्प का अक्षर>"
        ),
        question_marker="प्रश्न:",
        explanation_markers=("व्याख्या:", "स्पष्टीकरण:"),
        answer_markers=("उत्तर:", "सही उत्तर:"),
        context_heading="संदर्भ:",
        answer_hint="सही उत्तर {letter} है। हिन्दी में समझाइए क्यों।",
        letter_or=" या ",
    ),
    Language(
        code="sw",
        name="Swahili",
        native_name="Kiswahili",
        aliases=("swa", "swahili", "kiswahili"),
        instruction=(
            "Jibu swali lifuatalo la chaguo nyingi. Toa maelezo mafupi, kisha herufi MOJA tu ya "
            "chaguo ({letters}). Muundo wa jibu:\nMaelezo: <maelezo yako>\nJibu: <herufi ya chaguo>"
        ),
        question_marker="Swali:",
        explanation_markers=("Maelezo:", "Ufafanuzi:"),
        answer_markers=("Jibu:", "Jibu sahihi:"),
        context_heading="Muktadha:",
        answer_hint="Jibu sahihi ni {letter}. Eleza kwa Kiswahili kwa nini.",
        letter_or=" au ",
    ),
    Language(
        code="ur",
        name="Urdu",
        native_name="اردو",
        aliases=("urd", "urdu"),
        instruction=(
            "درج ذیل کثیر انتخابی سوال کا جواب دیں۔ پہلے مختصر وضاحت لکھیں، پھر صرف ایک آپشن کا "
            "حرف ({letters}) لکھیں۔ آؤٹ پٹ کی شکل:\nوضاحت: <آپ کی وضاحت>\nجواب: <آپشن کا حرف>"
        ),
        question_marker="سوال:",
        explanation_markers=("وضاحت:", "تشریح:"),
        answer_markers=("جواب:", "درست جواب:"),
        context_heading="سیاق و سباق:",
        answer_hint="درست جواب {letter} ہے۔ اردو میں وضاحت کریں کیوں۔",
        letter_separator="، ",
        letter_or=" یا ",
    ),
    # Its own entry, not an alias of zh: MedQA's Taiwan set is written in it and the release
    # translates it into simplified Chinese, a parallel pair a run votes across.
    Language(
        code="zh-hant",
        name="Traditional Chinese",
        native_name="繁體中文",
        aliases=("zh-tw", "zh-hk", "zh-mo", "zh-hant-tw", "zh-hant-hk", "cht"),
        instruction=(
            "請回答下列單選題，以繁體中文作答。先簡短說明理由，再只寫出一個選項字母（{letters}）。"
            "輸出格式：\n解釋:<你的解釋>\n答案:<選項字母>"
        ),
        question_marker="問題:",
        explanation_markers=("解釋:", "解釋：", "說明:", "說明：", "解析:", "解析："),
        answer_markers=("答案:", "答案：", "正確答案:", "答:", "答："),
        context_heading="參考資料:",
        answer_hint="正確答案是 {letter}。請用繁體中文解釋原因。",
        letter_separator="、",
        letter_or=" 或 ",
    ),
)

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _TABLE}

_ALIASES: dict[str, str] = {
    alias: lang.code for lang in _TABLE for alias in (lang.code, lang.name.lower(), *lang.aliases)
}


def normalize_code(code: str) -> str:
    """The ISO 639-1 code for a code, alias or name, case-insensitively (``"cn"`` -> ``"zh"``)."""
    key = str(code).strip().lower().replace("_", "-")
    # A tag we do not list names what its longest listed prefix names: "es-mx" Spanish,
    # "zh-hant-mo" traditional Chinese (a BCP 47 lookup, subtags dropped from the end).
    parts = key.split("-")
    for end in range(len(parts), 0, -1):
        prefix = "-".join(parts[:end])
        if prefix in _ALIASES:
            return _ALIASES[prefix]
    raise InputError(
        f"unknown language code {code!r}; known: {', '.join(LANGUAGES)}",
        field="lang",
        hint="use an ISO 639-1 code",
    )


def get_language(code: str) -> Language:
    """The registry entry for a code or alias."""
    return LANGUAGES[normalize_code(code)]


def instruction_for(code: str, labels: Sequence[str]) -> str:
    """The language's instruction with ``{letters}`` filled in (``"A, B, C, D or E"``)."""
    lang = get_language(code)
    return lang.instruction.replace("{letters}", lang.letters(labels))


STOPWORD_LISTS: dict[str, str] = {
    "en": "STOPWORDS_EN_PLUS", "de": "STOPWORDS_GERMAN", "fr": "STOPWORDS_FRENCH",
    "it": "STOPWORDS_ITALIAN", "es": "STOPWORDS_SPANISH", "pt": "STOPWORDS_PORTUGUESE",
    "nl": "STOPWORDS_DUTCH", "da": "STOPWORDS_DANISH", "sv": "STOPWORDS_SWEDISH",
    "no": "STOPWORDS_NORWEGIAN", "nb": "STOPWORDS_NORWEGIAN", "ru": "STOPWORDS_RUSSIAN",
    "tr": "STOPWORDS_TURKISH", "zh": "STOPWORDS_CHINESE", "ko": "STOPWORDS_KOREAN",
    "zh-hant": "STOPWORDS_CHINESE",  # its function words (的, 了, 在) are written alike
}
"""bm25s's stop-word list of each language a corpus may be written in (more than the
languages questions are asked in, whose table is above): a language without one keeps every
word (:mod:`calm_rag.retrieval.lexical`)."""
