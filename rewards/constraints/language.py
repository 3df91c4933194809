"""The response's language, detected offline by langdetect (its language profiles ship in
the package, nothing is downloaded). langdetect is imported on first use, so parsing and
every other constraint work without loading its ~55 profiles."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import field_validator

from rewards.constraints.base import Constraint, Verdict
from search.errors import shown

# ISO 639-1 codes langdetect knows, with the names written into instructions. langdetect
# tells Chinese scripts apart as zh-cn and zh-tw; both count as "zh".
LANGUAGES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali",
    "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "gu": "Gujarati", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "kn": "Kannada", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "mk": "Macedonian", "ml": "Malayalam", "mr": "Marathi",
    "ne": "Nepali", "nl": "Dutch", "no": "Norwegian", "pa": "Punjabi", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovenian", "so": "Somali", "sq": "Albanian", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip


@lru_cache(maxsize=1)
def _factory() -> Any:
    # A factory of our own rather than langdetect's module-level one, so seeding it (for
    # the same answer on every run) changes no global state other code may rely on.
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str | None:
    """The most likely ISO 639-1 code, or None when the text has nothing to go on (no
    letters). langdetect reads at most its first 10,000 characters."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _factory().create()
    detector.append(text)
    try:
        code: str = detector.detect()
    except LangDetectException:
        return None
    return code.split("-")[0]


class Language(Constraint):
    """The whole response is in one language. Undecided on a prefix: a few words say
    little, and the language may still change."""

    type: Literal["language"] = "language"
    code: str

    @field_validator("code")
    @classmethod
    def _known(cls, code: str) -> str:
        if code not in LANGUAGES:
            known = ", ".join(sorted(LANGUAGES))
            raise ValueError(f"unsupported language code {shown(code)}; use one of: {known}")
        return code

    def check(self, text: str, partial: bool) -> Verdict:
        if partial:
            return "undecided"
        return "pass" if detect_language(text) == self.code else "fail"

    def instruction(self) -> str:
        name = LANGUAGES[self.code]
        return f"Your ENTIRE response should be in {name} language, no other language is allowed."
