"""Planners: a story in, a ``ShotList`` out.

``Planner`` is the protocol every planner implements. ``OfflinePlanner`` needs no
network, no model and nothing beyond the standard library and pydantic:

1. split the story into sentences (". ! ? …", quotes and line breaks);
2. fit them to the shot count: merge neighbouring sentences of a long story, split a
   short one at its commas, and let one event span several beats when it is still short;
3. read each event's English structured fields (place, time of day, verbs, emotions,
   characters, props) from keyword tables in English, Russian and Kazakh;
4. carry the place, time of day and cast over from the previous event when a sentence
   names none (a story stays in one place until it moves);
5. give every shot a beat (establishing, medium, close-up, action, reaction, closing)
   that decides framing and camera angle and, when the story gives no verb, the pose.

Captions are the story's own words with whitespace collapsed, never translated.
Animals are listed in ``characters`` (they share the frame with Aldar Kose); objects
go to ``props``. Keyword stems match at the start of a word after NFKC, casefolding and
"ё"→"е", so inflected Russian and Kazakh forms match; a stem ending in "$" matches a
whole word only.
"""

from __future__ import annotations

import logging
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.language import detect_language
from engine.limits import MAX_FRAMES, MIN_FRAMES
from engine.settings import PlannerSettings
from engine.shots import Language, Shot, ShotList

logger = logging.getLogger(__name__)

HERO = "Aldar Kose"
TITLE_CHARS = 60
MAX_CHARACTERS = 3
MAX_PROPS = 3


class PlanError(ValueError):
    """The story cannot be planned as asked (the user's fault: say why)."""


@dataclass(frozen=True)
class PlanResult:
    """A plan and how it came to be: which planner made it, why a fallback happened, and
    what was repaired (clamped counts, unknown poses...). report.json records all three."""

    plan: ShotList
    planner: str
    fallback_reason: str | None = None
    repairs: tuple[str, ...] = ()


@runtime_checkable
class Planner(Protocol):
    """Turns a story into a shot list."""

    name: str

    def make_plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> PlanResult:
        """Plan ``shots`` shots (or a natural count when None) for ``story``."""
        ...


# --------------------------------------------------------------------------- keywords


def _fold(text: str) -> str:
    """The matching form of a text: NFKC, casefolded, "ё" read as "е"."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def _stems(spec: str) -> tuple[str, ...]:
    return tuple(_fold(stem.strip()) for stem in spec.split("|") if stem.strip())


@dataclass(frozen=True)
class _Cue:
    """A word family, in three languages, that names one English value."""

    value: str
    en: tuple[str, ...]
    ru: tuple[str, ...]
    kk: tuple[str, ...]

    def stems(self, language: Language) -> tuple[str, ...]:
        # Kazakh stories borrow Russian words, and a Russian story that spells the
        # hero "Көсе" reads as Kazakh, so Kazakh text is matched against both.
        return {"en": self.en, "ru": self.ru, "kk": self.kk + self.ru}[language]


@dataclass(frozen=True)
class _Verb(_Cue):
    """A verb family: the pose it implies and, as ``value``, an English action phrase.

    ``{other}`` in the action is filled with the first other person in the scene and
    ``{thing}`` with the first prop or animal; ``alone`` is used when there is none.
    """

    pose: str = "standing"
    alone: str = ""


def _cue(value: str, en: str = "", ru: str = "", kk: str = "") -> _Cue:
    return _Cue(value, _stems(en), _stems(ru), _stems(kk))


def _verb(pose: str, action: str, en: str, ru: str, kk: str, alone: str = "") -> _Verb:
    return _Verb(action, _stems(en), _stems(ru), _stems(kk), pose=pose, alone=alone or action)


PLACES = (
    _cue("bazaar", "bazaar|bazar|market|marketplace", "базар|рын", "базар|нарық|базарға"),
    _cue(
        "steppe",
        "steppe|prairie|grassland|plains|pasture|meadow|desert|field",
        "степ|равнин|пастбищ|пустын|поле$|поля$|полю$",
        "дала|жайлау|шөл|жазық",
    ),
    _cue(
        "yurt",
        "yurt|tent$|tents|home$|house|threshold|doorway",
        "юрт|порог|шанырак|дом$|дома$|домой|жилищ",
        "киіз үй|үй$|үйге|үйде|үйден|үйі|шаңырақ|табалдырық|есік",
    ),
    _cue(
        "village",
        "village|aul$|auls|town|settlement|city",
        "аул|деревн|село$|села$|селе$|город|кишлак|поселен",
        "ауыл|қала$|қалаға|қалада|қаладан|қаланың|қыстау",
    ),
    _cue(
        "mountains",
        "mountain|hill|peak|cliff|gorge",
        "гора$|горы$|горам|горах|гору$|горой|гор$|скал|холм|ущель",
        "тау$|тауға|тауда|таудан|таудың|таулар|тауы|шың|жартас|төбе",
    ),
    _cue(
        "river",
        "river|stream|lake|shore|riverbank",
        "река|реки|реке|реку|рекой|речк|берег|озер|ручей|ручь",
        "өзен|көл$|көлге|көлде|жаға|бұлақ",
    ),
    _cue("camp", "camp|caravan|caravanserai", "лагер|стоянк|караван|стан$", "керуен|қос$|жатақ"),
    _cue(
        "road",
        "road|path$|paths|track|crossroad",
        "дорога$|дороге$|дорогу$|дороги$|дорогам|путь|пути$|тропа|тропе|тропу",
        "жол$|жолда|жолға|жолы$|жолмен|соқпақ",
    ),
)

TIMES = (
    _cue(
        "dawn",
        "dawn|sunrise|daybreak|morning",
        "рассвет|утр|заря|зари$|зарю$",
        "таңертең|таң ат|таң сәрі|таң ата|сәске",
    ),
    _cue(
        "sunset",
        "sunset|dusk|evening|twilight|sundown",
        "закат|вечер|сумер",
        "кеш$|кешке|кешкі|кешқұрым|күн бат|ымырт",
    ),
    _cue("night", "night|midnight|moonlight|moon$", "ноч|полноч|лун", "түн|ай жарық"),
    _cue("day", "noon|midday|daylight|afternoon|daytime", "днем|полдень|полдн", "түс$|түсте|күндіз"),
)

WINTER = _cue(
    "winter",
    "winter|frozen|frost|snow|blizzard|icy",
    "зим|мороз|снег|стуж|вьюг|метел|лед$|льд",
    "қыс$|қыста|қыстың|қысы|қысқы|аяз|қар$|қарлы|боран|мұз",
)

HUMANS = (
    _cue(
        "merchant",
        "merchant|trader|peddler|shopkeeper|seller",
        "купец|купц|торговец|торговц|продавец|продавц",
        "саудагер|көпес|сатушы",
    ),
    _cue(
        "bai",
        "bai$|bais$|rich man",
        "бай$|бая$|баю$|баем$|бае$|баи$|богач|шыгай",
        "бай$|байға|байдың|байды|байдан|байлар|байы$|шығай",
    ),
    _cue("khan", "khan$|khans$", "хан$|хана$|хану$|ханом$", "хан$|ханға|ханның|ханды|ханнан"),
    _cue(
        "villagers",
        "villager|crowd|neighbour|neighbor|guests",
        "жител|толп|народ|сосед|односельчан",
        "халық|жұрт|ауылдас|көрші",
    ),
    _cue("old woman", "old woman|wife|grandmother", "жена$|жену$|жены$|старух|бабушк", "кемпір|әйел|әже"),
    _cue(
        "children",
        "child|children|boy$|boys|girl",
        "дети|детей|мальчик|девочк|ребен",
        "бала$|балалар|баласы|балаға",
    ),
    _cue("thief", "thief|thieves|robber", "вор$|вора$|воры$|разбойн", "ұры$|ұрылар"),
    _cue("shepherd", "shepherd|herdsman", "пастух|чабан", "қойшы|бақташы|шопан"),
    _cue("judge", "judge|biy$", "судья|судь|бий$", "би$|биі$|биге|қази"),
)

ANIMALS = (
    _cue(
        "horse",
        "horse|steed|stallion|mare$|mares|pony|ponies",
        "конь|коня|коне$|коню|конем|кони$|коней|лошад|скакун|жереб",
        "ат$|атқа|атын|аты$|атты$|аттың|атпен|тұлпар|жылқы|байтал|құлын",
    ),
    _cue("wolves", "wolf|wolves", "волк|волч", "қасқыр|бөрі"),
    _cue("sheep", "sheep$|lamb$|lambs|ram$", "овц|баран|ягн", "қой$|қойлар|қозы"),
    _cue("camel", "camel", "верблюд", "түйе"),
    _cue("dog", "dog$|dogs|hound", "собак|пес$|пса$|псы$", "ит$|иттер|итті"),
)

PROPS = (
    _cue("pot", "pot$|pots|cauldron|kettle", "котел|котл|казан", "қазан"),
    _cue("fur coat", "fur$|furs|fur coat|sheepskin", "шуб|мех$|меха$|мехов|тулуп", "ішік|ішіг"),
    _cue(
        "ragged coat",
        "rag$|rags|ragged|holes|patched|tatter",
        "лохмот|рван|дыряв|дыр$|дыры|заплат",
        "жыртық|жыртығ|тесік|тесіг|жамау",
    ),
    _cue(
        "coat",
        "coat|robe|chapan|cloak",
        "халат|чапан|пальто|кафтан",
        "шапан|тон$|тоны|тонд|тонға|тоннан",
    ),
    _cue("axe", "axe$|axes$|ax$", "топор", "балта"),
    _cue("soup", "soup|broth|stew", "суп$|супа$|супом|супу$|похлеб|бульон|сорп", "сорпа|көже"),
    _cue(
        "fire",
        "fire|campfire|bonfire|flame|hearth",
        "костер|костр|огон|огн|очаг|пламя",
        "от$|отқа|отты$|оттың|оттан|алау|ошақ",
    ),
    _cue("gold coins", "gold$|coin|money", "золот|монет|деньг|денег", "алтын|ақша|тиын|теңге"),
    _cue("salt", "salt", "соль$|соли$|солью$", "тұз"),
    _cue("meat", "meat|mutton", "мяс", "ет$|етті|еті$|етін"),
    _cue("onion", "onion", "лук$|лука$|луком$", "пияз"),
    _cue("kumys", "kumis|kumys|koumiss|milk", "кумыс|молок", "қымыз|сүт"),
    _cue("stone", "stone|rock$|rocks", "камн|камен", "тас$|тасқа|тасты|тастың|тасқ"),
    _cue("wool", "wool|fleece", "шерст", "жүн"),
    _cue("dombra", "dombra|lute", "домбр", "домбыра"),
    _cue("tea", "tea$", "чай|чаю$", "шай"),
    _cue("bread", "bread|flatbread", "хлеб|лепеш", "нан$|нанды|наны|бауырсақ"),
    _cue("whip", "whip", "плеть|плетк|плетью|камч", "қамшы"),
    _cue("bag", "bag$|bags|sack", "мешок|мешк|котомк", "қап$|қапшық|дорба"),
    _cue("bowl", "bowl|cup$|cups", "чаш|пиал", "кесе|тостаған"),
)

# Expressions of Aldar Kose. "greedy" is left out on purpose: it names the bai, and the
# prompt puts the emotion on the hero's face.
EMOTIONS = (
    _cue(
        "sly",
        "sly|grin|cunning|trick|clever|wink|pretend|smirk",
        "хитр|ухмыл|лукав|притвор|подмигн",
        "қу$|қулық|айла|өтірік|алдап|алдады|мысқыл",
    ),
    _cue(
        "amused",
        "laugh|smile|joke|chuckl|amus",
        "смея|смеет|засмея|рассмея|улыб|шут|хохо",
        "күлді|күліп|күле|күлкі|жымия",
    ),
    _cue(
        "cheerful",
        "sing$|sings|sang|singing|happy|glad|joy|merry|cheer",
        "пел$|поет|запел|песн|рад$|рада$|радост|весел",
        "ән$|әнін|ән сал|қуан|көңілді",
    ),
    _cue(
        "sad",
        "sad$|sadly|sigh|cry$|cries|crying|cried|weep|tears",
        "груст|печал|плак|вздох|слез",
        "қайғы|мұң|жылап|жылады|жылай|күрсін",
    ),
    _cue(
        "surprised",
        "stare|surprise|amaz|astonish|wonder$|wondered|wondering|shock",
        "удив|изум|ошелом",
        "таң қал|таңқал|таңданды|аң таң",
    ),
    _cue("curious", "curious|covet|interest", "любопыт|заинтерес", "қызық"),
    _cue(
        "freezing",
        "shiver|chatter|freezing|trembl",
        "дрож|мерз|продрог|озяб",
        "қалтыра|тоңды|тоңып|дірілде",
    ),
    _cue(
        "angry",
        "angry|anger|furious|shout|rage",
        "злой|злил|злост|сердит|сердил|рассерд|крич|гнев",
        "ашу|ызалы|айқайла",
    ),
    _cue(
        "confident",
        "swear|swore|boast|proud|bold|promise",
        "клял|клян|хваст|горд|уверя",
        "ант$|мақтан|сенімді|уәде",
    ),
    _cue("hungry", "hungry|starv", "голод", "аш$|ашығып|қарны аш"),
    _cue("pleased", "pleased|satisf|delight", "доволен|довольн|славу", "риза|разы"),
)

VERBS = (
    _verb(
        "riding",
        "rides swiftly",
        "ride$|rides|rode|riding|rider|mount$|mounts|mounted|mounting|gallop|horseback",
        "скач|поскак|ускак|прискак|верхом|сел на кон",
        "мініп|мінді|мінген|шауып|шапты|аттанды",
    ),
    _verb(
        "walking",
        "arrives",
        "arrive|approach|came$|come$|comes$|enter|reach",
        "пришел|пришла|приехал|прибыл|подошел|подъехал|вошел|явился",
        "келді|келіп|жетті|жетіп|кірді|кіріп",
    ),
    _verb(
        "walking",
        "wanders along",
        "wander|walk|stroll|roam|trudg|travel|journey",
        "брел|бродил|шел$|шагал|гулял|идет|странств|скитал",
        "келе жат|келеді|кезіп|кезді|аралады|аралап|қыдыр|жүрді|жүріп",
    ),
    _verb(
        "walking",
        "leaves",
        "leave$|leaves|left$|depart|went away|set off|sets off",
        "ушел|ушла|уехал|уходит|удалил|отправил",
        "кетті|кетіп|жөнелді",
    ),
    _verb("riding", "rides a horse", "on horse", "на коне|на лошад", "ат үстінде"),
    _verb(
        "sitting",
        "sits down",
        "sit$|sits|sat$|sitting|seated",
        "сел$|сидел|сидит|сидя$|уселся|присел",
        "отырды|отырып|отыр$|отырған",
    ),
    _verb(
        "talking",
        "tells a tale to {other}",
        "tell$|tells|told|tale",
        "рассказ|поведал",
        "әңгіме|ертегі",
        alone="tells a tale",
    ),
    _verb(
        "talking",
        "lies to {other}",
        "lie$|lies|lied|lying|pretend|trick|deceiv|fooled|fooling",
        "обман|соврал|врал|притвор|перехитр",
        "өтірік|алдады|алдап|алдау|қулық",
        alone="spins a clever lie",
    ),
    _verb(
        "talking",
        "swears to {other}",
        "swear|swore|sworn|promise|boast|claim|insist",
        "клял|клян|обещ|хваст|уверял|божил",
        "ант$|уәде|мақтан",
        alone="swears an oath",
    ),
    _verb(
        "talking",
        "talks with {other}",
        "say$|says|said|ask$|asks|asked|answer|repl|speak|spoke|talk|shout",
        "сказал|говор|спросил|спраш|ответил|отвеча|крикнул|молвил",
        "айтты|айтып|айтады|деді|сұрады|сұрап|сөйле|жауап",
        alone="talks aloud",
    ),
    _verb(
        "holding",
        "trades with {other}",
        "trade|swap|exchang|barter|buy$|buys|bought|sell$|sells|sold|offer|haggl|bargain",
        "обмен|менял|продал|купил|торговал|сторговал|предлож",
        "айырбас|сатты|сатып|саудалас|ұсынды|ұсынып",
        alone="strikes a bargain",
    ),
    _verb(
        "holding",
        "hands over {thing}",
        "give$|gives|gave|hand over|hands over",
        "дал$|отдал|подал|дает|отдает|угостил",
        "берді|беріп|береді",
        alone="hands something over",
    ),
    _verb(
        "holding",
        "takes {thing}",
        "take$|takes|took|grab|seize|snatch",
        "взял|забрал|схватил|выхватил|получил$",
        "алды$|алып$|алған",
        alone="takes his prize",
    ),
    _verb(
        "holding",
        "brings {thing}",
        "bring|brought|fetch",
        "принес|принос|привез",
        "әкелді|әкеліп",
        alone="brings something",
    ),
    _verb(
        "holding",
        "puts on {thing}",
        "put on|puts on|pulled on|pulls on|dress",
        "надел|оделся|накинул|натянул",
        "киді|киіп|киініп|жамылды",
        alone="puts on new clothes",
    ),
    _verb("holding", "opens {thing}", "open", "открыл|распахнул", "ашты|ашып", alone="opens his arms"),
    _verb(
        "pointing",
        "shows {thing}",
        "show|point",
        "показ|указал|указыв",
        "көрсетті|көрсетіп",
        alone="points the way",
    ),
    _verb(
        "crouching",
        "cooks over the fire",
        "cook|boil|stir$|stirs|stirred|stirring|brew|simmer",
        "варить|варил|вари$|сварил|кипят|помешив|готовил",
        "пісірді|пісіріп|қайнат",
    ),
    _verb(
        "crouching",
        "sets down {thing}",
        "set$|sets|placed|put$|puts",
        "постав|положил",
        "қойды|қойып",
        alone="kneels down",
    ),
    _verb(
        "sitting",
        "eats and drinks",
        "eat$|eats|ate$|eating|feast|drink|drank|sip$|sips|sipped",
        "съел|поел|ест$|ели$|едят|кушал|пообедал|выпил",
        "жеді|жеп$|жейді|ішті|ішіп",
    ),
    _verb(
        "laughing",
        "laughs out loud",
        "laugh|chuckl|giggl",
        "смеял|смеет|засмеял|рассмеял|хохот|хохоч",
        "күлді|күліп|күле|күлкі|жымиды",
    ),
    _verb(
        "waving",
        "sings a song",
        "sing$|sings|sang|singing|song",
        "пел$|поет|запел|песн|напев",
        "ән сал|әнін|ән айт",
    ),
    _verb(
        "waving",
        "fans himself",
        "fan$|fans|fanned|fanning|wave|waved",
        "обмахив|махал|помахал|махнул",
        "желпі|қол бұлға",
    ),
    _verb(
        "running",
        "runs off",
        "run$|runs|ran$|running|flee|fled|rush|hurr|chase|dash",
        "бежал|побежал|убежал|бегут|бежит|мчал|помчал|кинулся",
        "жүгірді|жүгіріп|қашты|қашып",
    ),
    _verb(
        "bowing",
        "bows to {other}",
        "bow$|bows|bowed|greet|thank",
        "поклон|кланя|благодар|поздоровал|приветств",
        "тағзым|сәлем|иілді|рахмет|алғыс",
        alone="bows politely",
    ),
    _verb(
        "bowing",
        "meets {other}",
        "meet$|meets|met$",
        "встретил|встреча",
        "кездесті|кездесіп|жолықты",
        alone="meets a stranger",
    ),
    _verb("standing", "waits patiently", "wait", "ждал|ждет|ожида|подожд", "күтті|күтіп"),
    _verb(
        "standing",
        "stares at {other}",
        "stare|look|watch|saw$|see$|sees|notic|gaze",
        "смотр|увидел|видит|заметил|глядел|глянул|уставил",
        "көрді|көріп|қарады|қарап$|байқады",
        alone="looks around",
    ),
    _verb(
        "standing",
        "stops short",
        "stop|halt|stand|stood",
        "останов|стоял|стоит|замер",
        "тоқтады|тоқтап|тұрды|тұрып",
    ),
    _verb(
        "standing",
        "refuses {other}",
        "refus|declin|deny",
        "отказ|не пуст|прогнал|выгнал",
        "бас тарт|көнбеді|қуып",
        alone="refuses the offer",
    ),
    _verb("bowing", "agrees to the deal", "agree|accept", "согласил|соглаш", "келісті|көнді"),
    _verb(
        "crouching",
        "shivers in the cold",
        "shiver|chatter|trembl",
        "дрож|мерз|замерз|продрог|озяб",
        "қалтыра|тоңды|тоңып|дірілде",
    ),
)

NEGATIONS = frozenset({"not", "never", "no", "didn", "don", "doesn", "не", "ни"})


class _Words:
    """A text in matching form: folded words joined by single spaces."""

    def __init__(self, text: str) -> None:
        self.key = " " + " ".join(re.findall(r"\w+", _fold(text))) + " "

    def first(self, stems: tuple[str, ...], *, negatable: bool = False) -> tuple[int, int] | None:
        """(position, -needle length) of the earliest stem match, or None."""
        best: tuple[int, int] | None = None
        for stem in stems:
            needle = " " + stem[:-1] + " " if stem.endswith("$") else " " + stem
            start = self.key.find(needle)
            while start != -1 and negatable and self._negated(start):
                start = self.key.find(needle, start + 1)
            if start != -1 and (best is None or (start, -len(needle)) < best):
                best = (start, -len(needle))
        return best

    def _negated(self, position: int) -> bool:
        return any(word in NEGATIONS for word in self.key[:position].split()[-2:])


def _found(
    words: _Words, cues: tuple[_Cue, ...], language: Language, *, negatable: bool = False
) -> list[_Cue]:
    """Cues named in the text, in order of first mention (one cue per position)."""
    hits = []
    for order, cue in enumerate(cues):
        where = words.first(cue.stems(language), negatable=negatable)
        if where is not None:
            hits.append((where, order, cue))
    hits.sort(key=lambda hit: (hit[0], hit[1]))
    result: list[_Cue] = []
    taken: set[int] = set()
    for (position, _), _, cue in hits:
        if position not in taken and cue.value not in {c.value for c in result}:
            result.append(cue)
        taken.add(position)
    return result


def _values(
    words: _Words, cues: tuple[_Cue, ...], language: Language, *, negatable: bool = False
) -> tuple[str, ...]:
    return tuple(cue.value for cue in _found(words, cues, language, negatable=negatable))


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class _Facts:
    """What one event names, in English."""

    place: str | None
    time_of_day: str | None
    winter: bool
    verbs: tuple[_Verb, ...]
    emotions: tuple[str, ...]
    humans: tuple[str, ...]
    animals: tuple[str, ...]
    props: tuple[str, ...]


@dataclass(frozen=True)
class _Scene:
    """Where and when an event happens, and who is there, after carry-over."""

    setting: str
    time_of_day: str
    humans: tuple[str, ...]


def _read_facts(text: str, language: Language) -> _Facts:
    words = _Words(text)
    places = _values(words, PLACES, language)
    times = _values(words, TIMES, language)
    verbs = tuple(v for v in _found(words, VERBS, language, negatable=True) if isinstance(v, _Verb))
    animals = _values(words, ANIMALS, language)
    if any(verb.pose == "riding" for verb in verbs) and "horse" not in animals:
        animals = ("horse", *animals)
    return _Facts(
        place=places[0] if places else None,
        time_of_day=times[0] if times else None,
        winter=words.first(WINTER.stems(language)) is not None,
        verbs=verbs,
        emotions=_values(words, EMOTIONS, language, negatable=True),
        humans=_values(words, HUMANS, language),
        animals=animals,
        props=_tidy_props(_values(words, PROPS, language)),
    )


def _tidy_props(props: tuple[str, ...]) -> tuple[str, ...]:
    """Drop a plain noun that a more specific prop already names ("coat" beside "fur coat")."""
    return tuple(p for p in props if not any(o != p and o.endswith(" " + p) for o in props))


def _scenes(facts: list[_Facts]) -> list[_Scene]:
    """Resolve place, time and cast per event, carrying each over until the story changes it."""
    place = next((f.place for f in facts if f.place), "steppe")
    time_of_day, winter, humans = "day", False, ()
    scenes = []
    for fact in facts:
        moved = fact.place is not None and fact.place != place
        place = fact.place or place
        time_of_day = fact.time_of_day or time_of_day
        winter = winter or fact.winter
        humans = fact.humans or (() if moved else humans)
        setting = "winter steppe" if winter and place == "steppe" else place
        scenes.append(_Scene(setting, time_of_day, humans))
    return scenes


# --------------------------------------------------------------------------- text


_TERMINAL = re.compile(r"[.!?…]+[\"'»”’)\]]*(?=\s)")
_CLAUSE = re.compile(r"[,;:](?=\s)| (?=[—–] )")
_OPENERS = "\"'«“„‘([—–-•* "
_BULLET = re.compile(r"^[-*•]\s+")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _starts_sentence(text: str) -> bool:
    head = text.lstrip(_OPENERS)
    return bool(head) and (head[0].isupper() or head[0].isdigit())


def split_sentences(story: str) -> list[str]:
    """The story's sentences with whitespace collapsed, in order."""
    sentences: list[str] = []
    for block in _blocks(story):
        sentences.extend(_split_block(block))
    return sentences


def _blocks(story: str) -> list[str]:
    """Group lines into blocks of running text.

    A blank line ends a block; so does a line that opens a sentence (capital letter,
    bullet or quote) after a line that does not run on with a comma, colon or hyphen.
    Wrapped lines of one sentence are joined with a space.
    """
    blocks: list[list[str]] = [[]]
    for raw in story.splitlines():
        line = _collapse(raw)
        if not line:
            blocks.append([])
            continue
        previous = blocks[-1][-1] if blocks[-1] else ""
        if previous and not previous.endswith((",", ";", ":", "-")) and _starts_sentence(line):
            blocks.append([])
        blocks[-1].append(_BULLET.sub("", line))
    return [" ".join(lines) for lines in blocks if lines]


def _split_block(block: str) -> list[str]:
    sentences, start = [], 0
    for match in _TERMINAL.finditer(block):
        if _starts_sentence(block[match.end() :]):
            sentences.append(block[start : match.end()].strip())
            start = match.end()
    tail = block[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _split_clause(sentence: str) -> tuple[str, str] | None:
    """Split a sentence at the clause break nearest its middle, or None if none is long enough."""
    middle = len(sentence) / 2
    best: tuple[float, str, str] | None = None
    for match in _CLAUSE.finditer(sentence):
        left, right = sentence[: match.end()].strip(), sentence[match.end() :].strip()
        if min(_word_count(left), _word_count(right)) < 3:
            continue
        distance = abs(match.end() - middle)
        if best is None or distance < best[0]:
            best = (distance, left, right)
    return (best[1], best[2]) if best else None


def _word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _title(first_sentence: str) -> str:
    """A short title in the story's language: the first clause, trimmed to ~60 characters."""
    head = re.split(r"[,;:]\s", first_sentence, maxsplit=1)[0]
    clause = head if _word_count(head) >= 3 else first_sentence
    clause = clause.strip(" \"'«»“”„‘’.!?…,;:—–-")
    if len(clause) > TITLE_CHARS:
        clause = clause[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:—– ") + "…"
    return clause or first_sentence


# --------------------------------------------------------------------------- fitting


def _fit_events(sentences: list[str], count: int) -> list[str]:
    """Merge or split sentences so that there are at most ``count`` events (fewer only if unsplittable)."""
    events = list(sentences)
    if len(events) > count:
        return _merge_events(events, count)
    while len(events) < count:
        order = sorted(range(len(events)), key=lambda i: (-len(events[i]), i))
        for index in order:
            parts = _split_clause(events[index])
            if parts:
                events[index : index + 1] = list(parts)
                break
        else:
            break
    return events


def _merge_events(events: list[str], count: int) -> list[str]:
    """Merge neighbours, shortest pair first, until ``count`` remain; first and last survive."""
    if len(events) > 4 * count:
        events = _chunk_evenly(events, 4 * count)
    while len(events) > count:
        index = min(range(len(events) - 1), key=lambda i: (len(events[i]) + len(events[i + 1]), i))
        events[index : index + 2] = [events[index] + " " + events[index + 1]]
    return events


def _chunk_evenly(events: list[str], count: int) -> list[str]:
    bounds = [round(i * len(events) / count) for i in range(count + 1)]
    return [" ".join(events[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def _spread(events: list[str], count: int) -> list[int]:
    """How many shots each event gets: ``count`` in all, extras to the longest events."""
    base, extra = divmod(count, len(events))
    longest = set(sorted(range(len(events)), key=lambda i: (-len(events[i]), i))[:extra])
    return [base + (i in longest) for i in range(len(events))]


# --------------------------------------------------------------------------- beats


@dataclass(frozen=True)
class _Beat:
    """A storyboard beat: framing and angle, plus pose/action/emotion when the story gives none."""

    framing: str
    camera_angle: str
    emotion: str
    fallbacks: tuple[tuple[str, str], ...]  # (pose, action)


# Face bias: apart from the wide establishing/closing beats, shots are medium or close,
# seen from the front or at eye level (the action beat's three-quarter view adds variety).
BEATS = {
    "establishing": _Beat(
        "wide", "high-angle", "calm",
        (("walking", "walks into view"), ("standing", "surveys the scene")),
    ),
    "medium": _Beat(
        "medium", "front", "sly",
        (
            ("talking", "talks with {other}"),
            ("holding", "holds {thing}"),
            ("pointing", "points ahead"),
            ("standing", "listens carefully"),
        ),
    ),
    "close-up": _Beat(
        "close-up", "front", "mischievous",
        (
            ("laughing", "grins slyly"),
            ("talking", "whispers a clever idea"),
            ("standing", "raises an eyebrow"),
        ),
    ),
    "action": _Beat(
        "medium", "three-quarter", "confident",
        (
            ("pointing", "gestures boldly"),
            ("holding", "holds up {thing}"),
            ("running", "hurries along"),
            ("crouching", "kneels down"),
        ),
    ),
    "reaction": _Beat(
        "close-up", "eye-level", "amused",
        (
            ("laughing", "laughs to himself"),
            ("bowing", "bows politely"),
            ("waving", "waves a hand"),
            ("standing", "watches closely"),
        ),
    ),
    "closing": _Beat(
        "wide", "low-angle", "cheerful",
        (("waving", "waves goodbye"), ("walking", "walks away"), ("standing", "looks back with a smile")),
    ),
}
_CYCLE = ("medium", "close-up", "action", "reaction")


def _beat_names(new_place: list[bool]) -> list[str]:
    """Beat per shot: wide first, wide last (6+ shots), a wide for a new place while the budget lasts."""
    count = len(new_place)
    wide_budget = max(1, count // 4)
    names: list[str] = []
    wides = step = 0
    for index in range(count):
        if count >= 3 and index == 0:
            name = "establishing"
        elif count >= 6 and index == count - 1:
            name = "closing"
        elif count >= 3 and new_place[index] and wides < wide_budget and names[-1] != "establishing":
            name = "establishing"
        else:
            name, step = _CYCLE[step % len(_CYCLE)], step + 1
        wides += name == "establishing"
        names.append(name)
    return names


# --------------------------------------------------------------------------- shots


_PLACE_PHRASE = {
    "steppe": "on the steppe",
    "bazaar": "at the bazaar",
    "yurt": "by the yurt",
    "village": "in the village",
    "mountains": "in the mountains",
    "river": "by the river",
    "camp": "at the camp",
    "road": "on the road",
    "winter steppe": "on the winter steppe",
}
_TIME_PHRASE = {"dawn": "at dawn", "day": "by day", "sunset": "at sunset", "night": "at night"}


@dataclass(frozen=True)
class _Slot:
    """One shot to fill: its event, its place within the event, and its beat."""

    caption: str
    facts: _Facts
    scene: _Scene
    nth: int  # 0-based position among the event's shots
    beat: str


def _fill(template: str, other: str | None, thing: str | None) -> str | None:
    if "{other}" in template and not other:
        return None
    if "{thing}" in template and not thing:
        return None
    return template.format(other=f"the {other}" if other else "", thing=f"the {thing}" if thing else "")


def _pose_and_action(
    slot: _Slot, used: set[str], previous: str | None, rng: random.Random | None
) -> tuple[str, str]:
    """The event's own verb for this shot, else the beat's first fallback not used yet in the event."""
    other = slot.scene.humans[0] if slot.scene.humans else None
    things = slot.facts.props + slot.facts.animals
    thing = things[0] if things else None
    if slot.nth < len(slot.facts.verbs):
        verb = slot.facts.verbs[slot.nth]
        return verb.pose, _fill(verb.value, other, thing) or verb.alone
    options = list(BEATS[slot.beat].fallbacks)
    if rng is not None:
        turn = rng.randrange(len(options))
        options = options[turn:] + options[:turn]
    filled = [(pose, text) for pose, template in options if (text := _fill(template, other, thing))]
    fresh = [option for option in filled if option[0] not in used and option[0] != previous]
    return (fresh or [o for o in filled if o[0] != previous] or filled)[0]


_UNCOUNTED = frozenset({"sheep", "salt", "meat", "soup", "kumys", "tea", "bread", "wool", "fire"})


def _noun_list(nouns: tuple[str, ...]) -> str:
    """English list with articles: "a horse, an axe and soup"."""

    def article(noun: str) -> str:
        if noun.endswith("s") or noun in _UNCOUNTED:
            return noun
        return ("an " if noun[0] in "aeiou" else "a ") + noun

    phrases = [article(noun) for noun in nouns]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _describe(
    pose: str, action: str, scene: _Scene, characters: tuple[str, ...], props: tuple[str, ...]
) -> str:
    line = f"{HERO}, {pose}, {action} {_PLACE_PHRASE[scene.setting]} {_TIME_PHRASE[scene.time_of_day]}"
    if characters or props:
        line += ", with " + _noun_list(characters + props)
    return line


def _shot(index: int, slot: _Slot, pose: str, action: str) -> Shot:
    beat = BEATS[slot.beat]
    facts = slot.facts
    characters = (slot.scene.humans + facts.animals)[:MAX_CHARACTERS]
    props = facts.props[:MAX_PROPS]
    emotion = facts.emotions[slot.nth] if slot.nth < len(facts.emotions) else beat.emotion
    return Shot(
        index=index,
        description=_describe(pose, action, slot.scene, characters, props),
        caption=slot.caption,
        action=action,
        setting=slot.scene.setting,
        framing=beat.framing,
        camera_angle=beat.camera_angle,
        pose=pose,
        emotion=emotion,
        time_of_day=slot.scene.time_of_day,
        characters=characters,
        props=props,
    )


# --------------------------------------------------------------------------- planner


class OfflinePlanner:
    """Keyword planner: deterministic, offline, English fields from EN/RU/KK stories."""

    name = "offline"

    def __init__(self, settings: PlannerSettings) -> None:
        self.settings = settings

    def make_plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> PlanResult:
        return PlanResult(plan=self.plan(story, shots=shots, seed=seed), planner=self.name)

    def plan(self, story: str, *, shots: int | None = None, seed: int = 0) -> ShotList:
        """Plan ``shots`` shots, or a natural count in [min_shots, max_shots] when None.

        The same story, ``shots`` and ``seed`` always give the same plan. Seed 0 keeps
        each beat's preferred fallback pose; another seed rotates the fallbacks.
        """
        # 1. check inputs
        text = self._check(story, shots)
        language = detect_language(text)
        # 2. events
        sentences = split_sentences(text)
        count = shots if shots is not None else self._natural_count(len(sentences))
        events = _fit_events(sentences, count)
        # 3. facts and scenes
        facts = [_read_facts(event, language) for event in events]
        scenes = _scenes(facts)
        # 4. beats and shots
        slots = self._slots(events, facts, scenes, _spread(events, count))
        plan = ShotList(title=_title(sentences[0]), language=language, shots=self._shots(slots, seed))
        logger.debug(
            "offline plan: %d sentences -> %d events -> %d shots (%s)",
            len(sentences), len(events), count, language,
        )
        return plan

    def _check(self, story: str, shots: int | None) -> str:
        if not isinstance(story, str) or not story.strip():
            raise PlanError("story is empty")
        if not re.search(r"\w", story):
            raise PlanError("story has no words")
        is_count = isinstance(shots, int) and not isinstance(shots, bool)
        if shots is not None and not (is_count and MIN_FRAMES <= shots <= MAX_FRAMES):
            raise PlanError(f"shots must be between {MIN_FRAMES} and {MAX_FRAMES}, got {shots!r}")
        return story

    def _natural_count(self, sentences: int) -> int:
        return min(max(sentences, self.settings.min_shots), self.settings.max_shots)

    @staticmethod
    def _slots(
        events: list[str], facts: list[_Facts], scenes: list[_Scene], spread: list[int]
    ) -> list[_Slot]:
        owners = [(i, nth) for i, n in enumerate(spread) for nth in range(n)]
        new_place = [
            nth == 0 and i > 0 and scenes[i].setting != scenes[i - 1].setting for i, nth in owners
        ]
        beats = _beat_names(new_place)
        return [
            _Slot(events[i], facts[i], scenes[i], nth, beat) for (i, nth), beat in zip(owners, beats)
        ]

    @staticmethod
    def _shots(slots: list[_Slot], seed: int) -> tuple[Shot, ...]:
        rng = random.Random(seed) if seed else None
        shots: list[Shot] = []
        used: set[str] = set()
        previous: str | None = None
        for index, slot in enumerate(slots, start=1):
            if slot.nth == 0:
                used = set()
            pose, action = _pose_and_action(slot, used, previous, rng)
            used.add(pose)
            previous = pose
            shots.append(_shot(index, slot, pose, action))
        return tuple(shots)
