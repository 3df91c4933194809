"""The response's language, decided as IFEval decides it: langdetect's answer equals the
code (langdetect's language profiles ship in the package, nothing is downloaded). A text
langdetect cannot read (no letters) passes, as in IFEval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from rewards.constraints.base import Constraint
from search.errors import shown

# The codes langdetect can answer, with the names written into instructions. langdetect
# tells Chinese scripts apart as zh-cn and zh-tw and never says "zh", so IFEval's check
# could never pass "zh": those two codes are accepted instead.
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
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh-cn": "Simplified Chinese", "zh-tw": "Traditional Chinese",
}  # fmt: skip


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

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("language:response_language", {"language": self.code})]

    def instruction(self) -> str:
        name = LANGUAGES[self.code]
        return f"Your ENTIRE response should be in {name} language, no other language is allowed."
