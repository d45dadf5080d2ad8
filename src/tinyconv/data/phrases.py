"""Negative phrases: sound-alikes derived from the wake word, and other everyday speech."""

from __future__ import annotations

import re
import shutil

import numpy as np

from tinyconv.data.tts import run_engine

# Consonant onsets and vowel nuclei used to make near-miss words by substitution.
_ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "ch", "sh", "th", "st", "tr", "br", "pl", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ee", "oo", "ay", "ow", "ea")

COMMON_WORDS = ["the", "be", "to", "of", "and", "a", "in", "that", "have", "it", "for", "not", "on", "with", "he", "as",
                "you", "do", "at", "this", "but", "his", "by", "from", "they", "we", "say", "her", "she", "or", "an",
                "will", "my", "one", "all", "would", "there", "their", "what", "so", "up", "out", "if", "about", "who",
                "get", "which", "go", "me", "when", "make", "can", "like", "time", "no", "just", "him", "know", "take",
                "people", "into", "year", "your", "good", "some", "could", "them", "see", "other", "than", "then",
                "now", "look", "only", "come", "its", "over", "think", "also", "back", "after", "use", "two", "how",
                "our", "work", "first", "well", "way", "even", "new", "want", "because", "any", "these", "give", "day",
                "most", "us", "is", "are", "was", "were", "been", "has", "had", "did", "said", "went", "made", "open",
                "close", "light", "music", "play", "stop", "next", "turn", "kitchen", "weather", "tomorrow", "today",
                "morning", "evening", "timer", "alarm", "volume", "lights", "door", "window", "coffee", "water",
                "dinner", "lunch", "remember", "reminder", "call", "message", "phone", "television", "garden", "table",
                "chair", "window", "seven", "eight", "nine", "ten", "hundred", "please", "thank", "sorry", "yes",
                "okay", "right", "left", "start", "pause", "resume", "cancel", "hello", "hi", "goodbye", "tiny", "tidy",
                "hey", "hay"]

SENTENCES = (
    "what time is it", "turn on the kitchen lights", "set a timer for ten minutes", "how is the weather today",
    "play some music in the living room", "can you call my mother", "remind me to buy milk tomorrow",
    "the quick brown fox jumps over the lazy dog", "I think we should leave a little earlier",
    "could you pass me the salt please", "we are going to the park this afternoon", "did you feed the cat",
    "let me know when dinner is ready", "open the garage door", "I will be there in five minutes",
    "that was a really good movie", "where did I put my keys", "the meeting starts at nine",
    "please close the window", "she said she would call back later", "turn the volume down a bit",
    "it looks like it is going to rain", "good morning everyone", "see you next week",
    "how much does this cost", "I need to charge my phone", "the train was late again",
    "tell me a joke", "what is on the calendar", "stop the alarm",
)


def _contains(phrase: str, wake_words: list[str]) -> bool:
    words = phrase.split()
    n = len(wake_words)
    return any(words[i : i + n] == wake_words for i in range(len(words) - n + 1))


def _word_variants(word: str) -> set[str]:
    """Near-miss spellings of one word: changed onset, changed first vowel, clipped, extended."""
    m = re.match(r"([^aeiouy]*)([aeiouy]+)?(.*)", word)
    onset, vowel, rest = (m.group(1), m.group(2) or "", m.group(3)) if m else (word, "", "")
    out = {o + vowel + rest for o in _ONSETS}
    if vowel:
        out |= {onset + v + rest for v in _VOWELS}
    if len(word) > 3:
        out |= {word[:-1], word + "s", word + "er", word[1:]}
    out.discard(word)
    return {w for w in out if w and re.search("[aeiouy]", w)}


def phonemes(text: str, voice: str = "en-us") -> str:
    """espeak-ng's phoneme string for `text`, stress marks removed ("" when espeak-ng is absent)."""
    if shutil.which("espeak-ng") is None:
        return ""
    # The text on stdin, not in argv, where a wake word like "-f/etc/passwd" would be an option.
    out = run_engine(["espeak-ng", "-q", "-x", "-v", voice], text=text).stdout.decode("utf-8", errors="replace")
    return re.sub(r"[\s',_]", "", out)


# espeak-ng's two-character phoneme mnemonics (diphthongs, affricates, long vowels).
_MULTI = re.compile(r"aI|eI|oU|aU|OI|tS|dZ|i:|u:|3:|A:|O:|I@|e@|U@|@L|aI@|.")


def phoneme_distance(a: str, b: str) -> int:
    """Levenshtein distance between two espeak-ng phoneme strings, counted in phonemes."""
    x, y = _MULTI.findall(a), _MULTI.findall(b)
    prev = list(range(len(y) + 1))
    for i, p in enumerate(x, 1):
        cur = [i]
        for j, q in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (p != q)))
        prev = cur
    return prev[-1]


def phonemes_of(texts: list[str], voice: str) -> list[str]:
    """`phonemes` of many texts with one espeak-ng call (one line per text)."""
    if not texts or shutil.which("espeak-ng") is None:
        return [""] * len(texts)
    stdin = "".join(f"{t}.\n" for t in texts)
    out = run_engine(["espeak-ng", "-q", "-x", "-v", voice], text=stdin).stdout.decode("utf-8", errors="replace")
    lines = [re.sub(r"[\s',_]", "", line) for line in out.splitlines() if line.strip()]
    return lines if len(lines) == len(texts) else [phonemes(t, voice) for t in texts]


def confusable_phrases(wake_word: str, min_phoneme_distance: int = 1, accents: list[str] | None = None) -> list[str]:
    """Phrases that sound like the wake word but are not it, sorted for determinism.

    A spelling that TTS pronounces exactly like the wake word ("hay tiny") is a positive in
    disguise, so phrases at phoneme distance 0 are always dropped. Distance-1 near misses
    ("pey tiny", "hey thiny") differ by one weak consonant; keeping them is a choice
    (`data.confusable_min_phoneme_distance`). The distance is the smallest between the phrase
    and the wake word as any two of the `accents` (espeak-ng voices; default: the English ones
    synthesis uses) pronounce them: en-GB-x-gbcwmd drops the h of "hey tiny", which puts
    "tiny" and "ey tiny" one phoneme from a real positive.
    """
    from tinyconv.data.tts import espeak_voice_files

    words = wake_word.lower().split()
    phrases: set[str] = set()
    for i, word in enumerate(words):
        for variant in _word_variants(word):
            phrases.add(" ".join(words[:i] + [variant] + words[i + 1 :]))
    if len(words) > 1:
        phrases |= set(words) | {" ".join(words[:-1]), " ".join(words[1:]), " ".join(reversed(words))}
    for extra in ("okay", "say", "the", "my", "hey"):
        for word in words:
            phrases.add(f"{extra} {word}")
    candidates = sorted(p for p in phrases if not _contains(p, words) and p != wake_word.lower())
    voices = accents if accents is not None else (list(espeak_voice_files().values()) or ["en-us"])
    targets = {t for v in voices for t in phonemes_of([wake_word], v) if t}
    if not targets:
        return candidates
    spoken = [phonemes_of(candidates, v) for v in voices]
    floor = max(1, min_phoneme_distance)
    return [
        p for i, p in enumerate(candidates)
        if min(phoneme_distance(said[i], t) for said in spoken for t in targets) >= floor
    ]


def other_phrases(wake_word: str, count: int, rng: np.random.Generator) -> list[str]:
    """Everyday speech: fixed sentences and random 1-5 word phrases, never containing the wake word."""
    words = wake_word.lower().split()
    out: list[str] = []
    while len(out) < count:
        if rng.random() < 0.3:
            phrase = SENTENCES[int(rng.integers(len(SENTENCES)))]
        else:
            phrase = " ".join(rng.choice(COMMON_WORDS, size=int(rng.integers(1, 6))))
        if not _contains(phrase, words):
            out.append(phrase)
    return out


# Other assistants' and products' wake words (short enough for the window): a detector must stay
# quiet when the room talks to another device.
OTHER_WAKE_WORDS = (
    "alexa", "hey siri", "siri", "okay google", "hey google", "hey cortana", "computer", "echo", "amazon",
    "hey jarvis", "okay nabu", "hey mycroft", "hey snips", "hey rhasspy", "hey bixby", "hi bixby", "hey portal",
    "hey mercedes", "hey sonos", "hey lenovo", "okay nabu casa", "alexa stop", "hey alexa", "wake up",
)

# Everyday sentences for long stretches of connected speech (with SENTENCES).
LONG_SENTENCES = (
    "I went to the market this morning and the strawberries were already sold out.",
    "We should probably leave before the traffic gets really bad on the bridge.",
    "My sister called to say she is flying in on Thursday instead of Friday.",
    "The kids have a school trip next week, so I need to sign the form tonight.",
    "Honestly, I think the second season was better than the first one.",
    "Can you remind me what we decided about the paint for the living room?",
    "The recipe says to bake it for forty minutes, but our oven runs a little hot.",
    "If it stops raining we could take the dog for a long walk by the river.",
    "He fixed the bike himself, which took most of the afternoon.",
    "There is a new bakery on the corner that opens at six every morning.",
    "I am not sure the package arrived; the tracking page has not changed since Monday.",
    "Let's try to finish the report before lunch so we can relax a bit later.",
    "The concert was loud, but the band played all of their old songs.",
    "We ran out of coffee again, so please add it to the shopping list.",
    "My phone keeps restarting whenever I open the camera.",
    "The neighbours are having a party on Saturday and they invited everyone on the street.",
    "It took us three hours to assemble that bookshelf, and one screw is still missing.",
    "Did you hear that the library is closing early during the holidays?",
    "I would rather stay home tonight and cook something simple.",
    "The train was delayed, so I read half of my book on the platform.",
    "Grandma wants the whole family over for dinner on Sunday.",
    "Please turn the heating down a little, it is getting warm in here.",
    "We watched a documentary about whales, and now the kids want to be marine biologists.",
    "The doctor said to rest for a few days and drink plenty of water.",
    "Our flight leaves at seven, so we have to be at the airport by five.",
    "I planted tomatoes and basil, but the snails got to the lettuce first.",
    "The meeting moved to Wednesday because half the team is travelling.",
    "Could you check whether the back door is locked before we go to bed?",
    "She has been learning the piano for a year and already plays beautifully.",
    "The cat knocked a glass off the table and then looked at me as if it were my fault.",
)


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def other_wake_words(wake_word: str, count: int) -> list[str]:
    """`count` other assistants' wake words in turn, none containing the wake word or contained in it."""
    words = _words(wake_word)
    pool = [w for w in OTHER_WAKE_WORDS
            if not _contains(" ".join(_words(w)), words) and not _contains(" ".join(words), _words(w))]
    return [pool[i % len(pool)] for i in range(count)] if pool else []


def natural_stretches(wake_word: str, count: int, rng: np.random.Generator) -> list[str]:
    """`count` stretches of 3-6 everyday sentences (~10 s of speech each), never containing the wake word."""
    words = _words(wake_word)
    sentences = [s for s in LONG_SENTENCES + tuple(s.capitalize() + "." for s in SENTENCES)
                 if not _contains(" ".join(_words(s)), words)]
    out: list[str] = []
    while len(out) < count and sentences:
        picked = rng.choice(len(sentences), size=int(rng.integers(3, 7)), replace=False)
        text = " ".join(sentences[int(i)] for i in picked)
        if not _contains(" ".join(_words(text)), words):  # across a sentence boundary ("... hey. Tiny ...")
            out.append(text)
    return out
