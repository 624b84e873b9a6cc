"""The offline planner's words: what it looks for in a story, in English, Russian and Kazakh.

This is the one file a translator edits. Each entry names one English value (a place, a time,
a person, an animal, a prop, an emotion, or a verb's pose and action phrase) and the word stems
that mean it in each language, "|"-separated; a stem matches any word that starts with it,
and one ending in "$" only the whole word (both after ``fold``: NFKC, casefolded, "ё" read
as "е"). Kazakh text is matched against the Kazakh and
the Russian stems, since Kazakh stories borrow Russian words. engine/planning/offline/planner.py reads these tables.

The story bible's tables (``HERO_LIKENESS``, ``CAST_LIKENESSES``, ``PLACE_LIKENESSES``) give each
person, animal and place the name the board shows, in each language, and one fixed English look.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from engine.shots import Language


def fold(text: str) -> str:
    """The matching form of a text: NFKC, casefolded, "ё" read as "е"."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def _stems(spec: str) -> tuple[str, ...]:
    return tuple(fold(stem.strip()) for stem in spec.split("|") if stem.strip())


@dataclass(frozen=True)
class Cue:
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
class Verb(Cue):
    """A verb family: the pose it implies and, as ``value``, an English action phrase.

    ``{other}`` in the action is filled with the first other person in the scene and
    ``{thing}`` with the first prop or animal; ``alone`` is used when there is none.
    """

    pose: str = "standing"
    alone: str = ""


def _cue(value: str, en: str = "", ru: str = "", kk: str = "") -> Cue:
    return Cue(value, _stems(en), _stems(ru), _stems(kk))


def _verb(pose: str, action: str, en: str, ru: str, kk: str, alone: str = "") -> Verb:
    return Verb(action, _stems(en), _stems(ru), _stems(kk), pose=pose, alone=alone or action)


@dataclass(frozen=True)
class Likeness:
    """How the board names a character or a place (``en``/``ru``/``kk``, in the story's language)
    and how it is drawn (``look``).

    The look goes word for word into every SDXL prompt of a panel with that character or place,
    so the same words draw them the same way in every panel: English, concrete and visual (build,
    clothes, colours, landmarks), under ~100 characters, no names, no story events.
    """

    look: str
    en: str
    ru: str
    kk: str

    def name(self, language: Language) -> str:
        return {"en": self.en, "ru": self.ru, "kk": self.kk}[language]


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

# The story bible's entries, keyed by the English value of HUMANS, ANIMALS and PLACES (and by
# every setting the renderers paint: "winter steppe" is the steppe under snow). Aldar Kose's look
# is replaced by the configured character look before rendering; his names are what the board shows.
HERO_LIKENESS = Likeness("Aldar Kose, the beardless trickster", "Aldar Kose", "Алдар Косе", "Алдар Көсе")

CAST_LIKENESSES = {
    # people
    "merchant": Likeness(
        "plump merchant, striped silk robe, embroidered skullcap", "the merchant", "купец", "саудагер"
    ),
    "bai": Likeness("stout old bai, fox-fur coat, tall black hat, grey beard", "the bai", "бай", "бай"),
    "khan": Likeness("proud khan, golden robe, fur-trimmed crown", "the khan", "хан", "хан"),
    "villagers": Likeness(
        "village folk in felt hats and patterned quilted robes", "the villagers", "жители аула", "ауыл адамдары"
    ),
    "old woman": Likeness(
        "old woman, white headscarf, long dark velvet dress, silver earrings", "the old woman", "старуха", "кемпір"
    ),
    "children": Likeness("small children in bright quilted coats and skullcaps", "the children", "дети", "балалар"),
    "thief": Likeness("lean thief, dark patched robe, black scarf over the face", "the thief", "вор", "ұры"),
    "shepherd": Likeness(
        "weathered shepherd, sheepskin coat, felt hat, long wooden crook", "the shepherd", "пастух", "қойшы"
    ),
    "judge": Likeness("grey-bearded judge, dark blue robe, white turban", "the judge", "судья", "би"),
    # animals
    "horse": Likeness("shaggy bay steppe horse", "the horse", "конь", "ат"),
    "wolves": Likeness("lean grey steppe wolves, yellow eyes", "the wolves", "волки", "қасқырлар"),
    "sheep": Likeness("fat-tailed sheep with cream wool", "the sheep", "овцы", "қойлар"),
    "camel": Likeness("two-humped Bactrian camel, shaggy brown wool", "the camel", "верблюд", "түйе"),
    "dog": Likeness("big shaggy white sheepdog", "the dog", "собака", "ит"),
}

PLACE_LIKENESSES = {
    "bazaar": Likeness("busy bazaar, colourful awnings, clay walls, heaps of melons", "the bazaar", "базар", "базар"),
    "steppe": Likeness("endless golden steppe, feather grass, wide sky", "the steppe", "степь", "дала"),
    "winter steppe": Likeness(
        "snow-covered steppe, frozen grass, pale wide sky", "the winter steppe", "зимняя степь", "қысқы дала"
    ),
    "yurt": Likeness(
        "white felt yurt, carved red wooden door, patterned felt rugs", "the yurt", "юрта", "киіз үй"
    ),
    "village": Likeness("small aul of white yurts and clay houses, wooden fences", "the village", "аул", "ауыл"),
    "mountains": Likeness(
        "tall snow-capped mountains, rocky slopes, dark spruce trees", "the mountains", "горы", "таулар"
    ),
    "river": Likeness("winding river, reeds on the banks, smooth pebbles", "the river", "река", "өзен"),
    "camp": Likeness("caravan camp, felt tents, bundles of goods, campfire smoke", "the camp", "стоянка", "қос"),
    "road": Likeness("dusty dirt road winding between low hills", "the road", "дорога", "жол"),
}

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

# --------------------------------------------------------------------------- who a sentence is about
# Aldar Kose's own name (a Kazakh story inflects "Көсе": "Көсеге", "Көсенің").
HERO_NAMES = _cue("Aldar Kose", "aldar", "алдар", "алдар|көсе")

# Third-person pronouns, any case (he, him, his, they...). Outside quotes, a pronoun means
# Aldar Kose when he was in the previous sentence's shot, else that sentence's subject.
# Feminine forms are left out: they never mean him.
PRONOUNS = _cue(
    "pronoun",
    "he$|him$|his$|himself$|they$|them$|their$",
    "он$|его$|ему$|им$|него$|нему$|ним$|нем$|они$|их$|них$|ними$|ими$",
    "ол$|оны$|оған$|оның$|одан$|онымен$|олар$|оларды$|оларға$|олардың$",
)

# Words that start a new clause inside a sentence (besides , ; : and a dash), to tell who does
# what in "Aldar Kose rode away, while the merchant waited".
CLAUSE_WORDS = _cue(
    "clause",
    "and$|but$|while$|then$|whereas$",
    "и$|а$|но$|пока$|затем$|потом$|тогда$",
    "ал$|бірақ$|және$|сосын$|содан$",
)


# --------------------------------------------------------------------------- the board's own words


@dataclass(frozen=True)
class Phrase:
    """A few words the board writes itself (an extra panel's caption), in each language."""

    en: str
    ru: str
    kk: str

    def text(self, language: Language) -> str:
        return {"en": self.en, "ru": self.ru, "kk": self.kk}[language]


# What a prop is called in an insert panel's caption, keyed by the English value of PROPS.
PROP_NAMES = {
    "pot": Phrase("the pot", "котёл", "қазан"),
    "fur coat": Phrase("the fur coat", "шуба", "ішік"),
    "ragged coat": Phrase("the ragged coat", "рваный халат", "жыртық тон"),
    "coat": Phrase("the coat", "халат", "тон"),
    "axe": Phrase("the axe", "топор", "балта"),
    "soup": Phrase("the soup", "суп", "сорпа"),
    "fire": Phrase("the fire", "костёр", "от"),
    "gold coins": Phrase("the gold coins", "золотые монеты", "алтын тиындар"),
    "salt": Phrase("the salt", "соль", "тұз"),
    "meat": Phrase("the meat", "мясо", "ет"),
    "onion": Phrase("the onion", "лук", "пияз"),
    "kumys": Phrase("the kumys", "кумыс", "қымыз"),
    "stone": Phrase("the stone", "камень", "тас"),
    "wool": Phrase("the wool", "шерсть", "жүн"),
    "dombra": Phrase("the dombra", "домбра", "домбыра"),
    "tea": Phrase("the tea", "чай", "шай"),
    "bread": Phrase("the bread", "хлеб", "нан"),
    "whip": Phrase("the whip", "камча", "қамшы"),
    "bag": Phrase("the bag", "мешок", "қап"),
    "bowl": Phrase("the bowl", "чаша", "кесе"),
}

# An establishing panel's caption: a place's name (PLACE_LIKENESSES) and, when the story says
# when, the time of day. Kazakh puts the time first, as an adjective: "Кешкі дала".
PLACE_LINE = Phrase("{place} {time}", "{place} {time}", "{time} {place}")
TIME_PHRASES = {
    "dawn": Phrase("at dawn", "на рассвете", "таңғы"),
    "day": Phrase("by day", "днём", "күндізгі"),
    "sunset": Phrase("at sunset", "на закате", "кешкі"),
    "night": Phrase("at night", "ночью", "түнгі"),
}
# Two in one panel, Aldar Kose first ("Көсе" ends in a vowel, so Kazakh takes "мен").
PAIR = Phrase("{a} and {b}", "{a} и {b}", "{a} мен {b}")
# Last resorts for an extra panel's caption, when every name is taken: the shot's framing, then a number.
FRAMING_WORDS = {
    "wide": Phrase("Wide shot", "Общий план", "Жалпы план"),
    "medium": Phrase("Medium shot", "Средний план", "Орта план"),
    "close-up": Phrase("Close-up", "Крупный план", "Ірі план"),
}
PANEL_WORD = Phrase("Panel {n}", "Кадр {n}", "Кадр {n}")
