"""Value normalisation before comparing a prediction with ground truth: case, spacing,
number words ("two" == "2" == 2 == "2.0"), units ("2 bedrooms" == "2"), booleans
("yes" == "True" == true) and the many spellings of "not stated" (which mean absent)."""

from __future__ import annotations

import re
from typing import Any

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "a": 1, "an": 1,
}
_TRUE = {"true", "yes", "y", "allowed", "required"}
_FALSE = {"false", "no", "n", "not allowed", "not required"}
_ABSENT = {"", "null", "none", "unknown", "n/a", "na", "not mentioned", "not specified",
           "not stated", "unspecified", "any", "-"}
_UNIT = re.compile(r"^(\S+)\s*(?:bed(?:room)?s?|bath(?:room)?s?|br|ba|rooms?)$")


def _number(text: str) -> str | None:
    if text in _NUMBER_WORDS and text not in ("a", "an"):
        return str(_NUMBER_WORDS[text])
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else str(value)


def normalise_value(value: Any) -> str | None:
    """A canonical string for `value`, or None when it means "not stated"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(str(value))
    if isinstance(value, list | dict):
        return None
    text = re.sub(r"\s+", " ", str(value)).strip().strip(".,;:!?\"'").strip().lower()
    if text in _ABSENT:
        return None
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    number = _number_or_count(text)
    return number if number is not None else text


def _number_or_count(text: str) -> str | None:
    """The digits of a number ("2.0", "two") or of a count with its unit word ("3 bedrooms")."""
    number = _number(text)
    if number is not None:
        return number
    unit = _UNIT.match(text)
    if unit:
        word = unit.group(1)
        return str(_NUMBER_WORDS[word]) if word in _NUMBER_WORDS else _number(word)
    return None


def normalise_name(value: Any) -> str | None:
    """Property and place names: case, punctuation and spacing do not count."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"[^\w\s]", " ", value.lower())
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


# -- declared normalisers ----------------------------------------------------------------------
# `[tasks.eval] normalize` names steps applied in order to the text of a value (booleans and
# numbers are turned into text first); a step returning None means "not stated".

_ABSENT_EXTRA = {"dontcare", "don't care", "dont care", "no preference", "whatever", "不限", "无", "随便",
                 "都可以", "都行", "没有要求", "无所谓", "未知", "未提及"}
_TRUE_EXTRA = {"是", "有", "需要", "要", "对"}
_FALSE_EXTRA = {"否", "没有", "不需要", "不要", "不是"}
_EDGE_PUNCT = ".,;:!?\"'。，；：！？、“”‘’（）()"
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_ZH_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万]+(?:点[零〇一二三四五六七八九]+)?")
_UNIT_AFTER_NUMBER = re.compile(
    r"(\d(?:\.\d+)?)\s*(?:块钱|元钱|人民币|元|块|分|星级|星|个人|人|位|间|晚|yuan|rmb|stars?|people|persons?|guests?"
    r"|bed(?:room)?s?|bath(?:room)?s?)(?![A-Za-z])", re.I)
_CURRENCY_BEFORE = re.compile(r"[¥￥$€£]\s*(?=\d)")
_RANGE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|~|～|—|–|到|至|to)\s*(\d+(?:\.\d+)?)", re.I)
_AT_LEAST = re.compile(r"^(?:at least|above|over|more than|min(?:imum)?)?\s*(\d+(?:\.\d+)?)\s*"
                       r"(?:及以上|以上|或以上|\+|or more|and above|and up)$", re.I)
_AT_LEAST_PREFIX = re.compile(r"^(?:at least|above|over|more than|不低于|至少)\s*(\d+(?:\.\d+)?)$", re.I)
_AT_MOST = re.compile(r"^(?:at most|below|under|less than|不超过|最多)?\s*(\d+(?:\.\d+)?)\s*"
                      r"(?:及以下|以下|或以下|or less|and below|and under)?$", re.I)
_TIME = re.compile(r"^(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'?clock)?$", re.I)


def zh_numeral(text: str) -> str | None:
    """The digits of a Chinese numeral: 三 -> 3, 两 -> 2, 十五 -> 15, 一百五 -> 150,
    二〇一九 -> 2019, 四点五 -> 4.5; None when `text` is not one."""
    whole, _, frac = text.partition("点")
    if not whole or any(c not in _ZH_DIGITS and c not in _ZH_UNITS for c in whole):
        return None
    if not any(c in _ZH_UNITS for c in whole):  # digit by digit: 二〇一九
        value = "".join(str(_ZH_DIGITS[c]) for c in whole)
    else:
        total = section = 0
        digit: int | None = None
        last_unit = 1
        for c in whole:
            if c in _ZH_DIGITS:
                digit = _ZH_DIGITS[c]
                continue
            unit = _ZH_UNITS[c]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit, last_unit = 0, None, unit
                continue
            section += (1 if digit is None else digit) * unit  # 十五: a bare 十 is 10
            digit, last_unit = None, unit
        if digit is not None:  # 一百五 = 150: a trailing digit counts in the next unit down
            section += digit * (last_unit // 10 if last_unit >= 100 and whole[-2] in _ZH_UNITS else 1)
        value = str(total + section)
    if frac:
        value += "." + "".join(str(_ZH_DIGITS[c]) for c in frac)
    return value


def _nfkc(text: str) -> str | None:
    import unicodedata

    return unicodedata.normalize("NFKC", text)


def _spacing(text: str) -> str | None:
    return re.sub(r"\s+", " ", text).strip().strip(_EDGE_PUNCT).strip()


def _absent(text: str) -> str | None:
    return None if text.strip().lower() in _ABSENT | _ABSENT_EXTRA else text


def _booleans(text: str) -> str | None:
    low = text.strip().lower()
    if low in _TRUE | _TRUE_EXTRA:
        return "true"
    if low in _FALSE | _FALSE_EXTRA:
        return "false"
    return text


def _numbers(text: str) -> str | None:
    number = _number_or_count(text.strip().lower())
    return number if number is not None else text


def _zh_numbers(text: str) -> str | None:
    return _ZH_NUMERAL.sub(lambda m: zh_numeral(m.group(0)) or m.group(0), text)


def _units(text: str) -> str | None:
    return _UNIT_AFTER_NUMBER.sub(r"\1", _CURRENCY_BEFORE.sub("", text)).strip()


def _ranges(text: str) -> str | None:
    text = _RANGE.sub(r"\1-\2", text.strip())
    if m := _AT_LEAST.match(text) or _AT_LEAST_PREFIX.match(text):
        return ">=" + m.group(1)
    m = _AT_MOST.match(text)
    if m and text != m.group(1):
        return "<=" + m.group(1)
    return text


def _time(text: str) -> str | None:
    low = text.strip().lower()
    if low in ("noon", "midday", "中午12点"):
        return "12:00"
    m = _TIME.match(low)
    if not m:
        return text
    hour, minute, suffix = int(m.group(1)), int(m.group(2) or 0), (m.group(3) or "").replace(".", "")
    if suffix.startswith("p") and hour < 12:
        hour += 12
    elif suffix.startswith("a") and hour == 12:
        hour = 0
    if hour > 23 or minute > 59 or (not suffix and m.group(2) is None):
        return text  # a bare number is not a time
    return f"{hour:02d}:{minute:02d}"


NORMALISERS: dict[str, Any] = {
    "default": normalise_value,   # the real-estate behaviour: case, spacing, numbers, units, booleans, absent
    "name": normalise_name,       # names: case, punctuation and spacing do not count
    "nfkc": _nfkc,                # full-width digits and letters -> ASCII (４００ -> 400)
    "lower": lambda text: text.lower(),
    "spacing": _spacing,          # one space, no edge punctuation
    "absent": _absent,            # "", unknown, dontcare, 不限 ... -> not stated
    "booleans": _booleans,        # yes/true/是 -> true, no/false/否 -> false
    "numbers": _numbers,          # "two", "2.0", "2 bedrooms" -> 2
    "zh_numbers": _zh_numbers,    # 三 -> 3, 两 -> 2, 十五 -> 15 (inside the text)
    "units": _units,              # 300元, 4.5分, 5星, $20, 2 people -> the number
    "ranges": _ranges,            # 400-500元, 400到500 -> 400-500; 4.5分以上 -> >=4.5
    "time": _time,                # 7 pm -> 19:00, 11:30 am -> 11:30
}


def normaliser(steps: list[str], synonyms: dict[str, list[str]] | None = None) -> Any:
    """A function value -> canonical string (None: not stated), applying `steps` in order
    and then the synonyms table (canonical -> spellings, compared after the same steps)."""
    funcs = [NORMALISERS[s] for s in steps]

    def run(value: Any) -> str | None:
        if value is None or isinstance(value, list | dict):
            return None
        text: Any = ("true" if value else "false") if isinstance(value, bool) else value
        if isinstance(text, int | float):
            text = _number(str(text))
        for func in funcs:
            if text is None:
                return None
            text = func(str(text))
        return None if text is None or str(text) == "" else str(text)

    table: dict[str, str] = {}
    for canonical, spellings in (synonyms or {}).items():
        target = run(canonical) or canonical
        for spelling in [canonical, *spellings]:
            key = run(spelling)
            if key is not None:
                table[key] = target

    def normalise(value: Any) -> str | None:
        out = run(value)
        return table.get(out, out) if out is not None else None

    return normalise
