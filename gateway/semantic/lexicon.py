"""Word lists for the verifier: general English, nothing taken from any benchmark's data.

Each list answers one question the verifier asks of a word: does it carry no topic
(STOPWORDS), deny (NEGATIONS), name a quantity (NUMBER_WORDS, ORDINALS, UNITS), or sit at
one pole of a scale whose other pole changes the answer (POLES).
"""

from __future__ import annotations

STOPWORDS = frozenset(
    """
    a an the this that these those there here it its it's itself they them their theirs we us our
    you your yours i me my mine he him his she her hers one's who's what's whats how's where's
    is are was were be been being am do does did done doing have has had having will would shall
    should can could may might must ought need
    of in on at by for with to from into onto over about as than then so such very too also just
    only even still yet again ever really quite rather some any each every all both either
    and or but if because while whereas although though since until unless whether
    what which who whom whose when where why how
    please kindly tell me explain describe give show let lets let's know want like would
    can't cant
    up down out off
    thing things something anything everything someone anyone way ways kind sort type
    get got make made use used using
    provide tell say says said mean means meaning
    """.split()
)

# Words that deny what follows. Contractions ending in n't are caught by their suffix.
NEGATIONS = frozenset(
    "not no never none nobody nothing nowhere neither nor without cannot cant dont doesnt didnt "
    "isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt neednt".split()
)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

NUMBER_WORDS: dict[str, int] = {word: value for value, word in enumerate(_ONES)}
NUMBER_WORDS.update({word: 20 + 10 * n for n, word in enumerate(_TENS)})
NUMBER_WORDS.update({"dozen": 12, "couple": 2, "pair": 2, "single": 1, "twice": 2, "double": 2,
                     "triple": 3, "thrice": 3})

SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000,
          "trillion": 1_000_000_000_000}
# "thousands of files", "a thousand": a size, not a count; vague on both sides of a pair.
VAGUE_SCALES = {"hundreds": 100, "thousands": 1_000, "millions": 1_000_000, "billions": 1_000_000_000,
                "dozens": 12}
# Written with a dot but not code: never names.
ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "a.k.a", "aka", "cf", "n.b", "approx", "a.m", "p.m", "u.s", "u.k"})

ORDINALS: dict[str, int] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "twentieth": 20,
    "hundredth": 100, "thousandth": 1000,
}

# Number words that are as often not numbers ("one of", "which one", "a second opinion",
# "a couple of", "half the"): they may answer a number on the other side but never demand one.
WEAK_NUMBER_WORDS = frozenset({"one", "single", "first", "second", "couple", "pair", "half", "double"})



def _spellings(canonical_spellings: dict[str, str]) -> dict[str, str]:
    return {spelling: canonical for canonical, spellings in canonical_spellings.items() for spelling in spellings.split()}


# Unit spellings -> one canonical name; a number's unit must agree across the pair.
UNITS: dict[str, str] = _spellings({
    "percent": "% percent percentage pct",
    "km": "km kms kilometer kilometers kilometre kilometres",
    "m": "meter meters metre metres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "mm": "mm millimeter millimeters millimetre millimetres",
    "mile": "mi mile miles",
    "foot": "ft foot feet",
    "inch": "in. inch inches",
    "yard": "yd yard yards",
    "kg": "kg kgs kilogram kilograms kilo kilos",
    "g": "g gram grams gramme grammes",
    "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces",
    "ton": "ton tons tonne tonnes",
    "l": "l liter liters litre litres",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "gallon": "gal gallon gallons",
    "celsius": "c °c celsius centigrade",
    "fahrenheit": "f °f fahrenheit",
    "kelvin": "k kelvin",
    "second": "s sec secs seconds",
    "minute": "min mins minute minutes",
    "hour": "h hr hrs hour hours",
    "day": "day days",
    "week": "wk week weeks",
    "month": "mo month months",
    "year": "yr yrs year years",
    "usd": "$ usd dollar dollars buck bucks",
    "eur": "€ eur euro euros",
    "gbp": "£ gbp sterling",
    "jpy": "¥ jpy yen",
    "byte": "b byte bytes",
    "kb": "kb kib kilobyte kilobytes",
    "mb": "mb mib megabyte megabytes",
    "gb": "gb gib gigabyte gigabytes",
    "tb": "tb tib terabyte terabytes",
    "hz": "hz hertz", "khz": "khz", "mhz": "mhz", "ghz": "ghz",
    "watt": "w watt watts", "kw": "kw kilowatt kilowatts", "kwh": "kwh",
    "volt": "v volt volts", "amp": "a amp amps ampere amperes",
    "calorie": "cal kcal calorie calories",
    "mph": "mph", "kmh": "kmh kph",
    "degree": "° deg degree degrees",
    "token": "token tokens", "x": "x times",
})


def _poles(scales: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {
        word: (scale, pole)
        for scale, pair in scales.items()
        for pole, words in zip(("+", "-"), pair, strict=True)
        for word in words.split()
    }


# Scales whose two poles ask different questions. word -> (scale, pole).
POLES: dict[str, tuple[str, str]] = _poles({
    "merit": ("advantage advantages pro pros benefit benefits merit merits strength strengths upside upsides",
              "disadvantage disadvantages con cons drawback drawbacks downside downsides weakness weaknesses "
              "risk risks limitation limitations"),
    "order": ("before earlier prior previous preceding", "after later following subsequent next"),
    "amount": ("more most increase increases increased increasing raise raises rise rises grow grows "
               "maximum max maximize maximise plus gain gains",
               "less least fewer fewest decrease decreases decreased decreasing reduce reduces "
               "reduced shrink shrinks minimum min minimize minimise minus"),
    "size": ("large larger largest big bigger biggest huge greater greatest long longer longest "
             "tall taller tallest wide wider widest heavy heavier heaviest high higher highest deep deeper deepest",
             "small smaller smallest little tiny short shorter shortest narrow narrower narrowest "
             "lighter lightest low lower lowest shallow shallower shallowest"),
    "quality": ("good better best excellent superior", "bad worse worst inferior"),
    "speed": ("fast faster fastest quick quicker quickest rapid", "slow slower slowest"),
    "cost": ("expensive pricier priciest costly", "cheap cheaper cheapest inexpensive affordable"),
    "temperature": ("hot hotter hottest warm warmer warmest heat heating", "cold colder coldest cool cooler coolest cooling"),
    "age": ("old older oldest elder eldest ancient", "young younger youngest new newer newest modern recent"),
    "truth": ("true correct right valid", "false incorrect wrong invalid"),
    "sign": ("positive", "negative"),
    "position": ("above top upper upward upwards north northern", "below beneath bottom downward downwards south southern"),
    "side": ("east eastern", "west western"),
    "inside": ("inside internal inner interior indoor indoors", "outside external outer exterior outdoor outdoors"),
    "ends": ("start starts begin begins beginning first open opening opened", "end ends finish finishes stop stops last close closing closed"),
    "add": ("add adds adding insert inserts include includes including install installing",
            "remove removes removing delete deletes deleting exclude excludes excluding uninstall uninstalling"),
    "switch": ("enable enables enabled turn-on activate activates", "disable disables disabled turn-off deactivate deactivates"),
    "transfer": ("import imports importing upload uploads uploading send sends sending push pushes buy buys buying "
                 "input inputs", "export exports exporting download downloads downloading receive receives "
                 "receiving pull pulls sell sells selling output outputs"),
    "coding": ("encode encodes encoding encrypt encrypts encryption compress compresses compression serialize "
               "serialise serialization", "decode decodes decoding decrypt decrypts decryption decompress "
               "decompresses decompression deserialize deserialise deserialization"),
    "permission": ("allow allows allowed permit permits permitted accept accepts accepted legal", "deny denies denied "
                   "forbid forbids forbidden prohibit prohibited reject rejects rejected illegal"),
    "safety": ("safe safer safest harmless", "dangerous unsafe harmful risky toxic"),
    "success": ("success succeed succeeds win wins winning pass passes", "failure fail fails lose loses losing"),
    "health": ("healthy", "unhealthy"),
    "likelihood": ("likely possible probable", "unlikely impossible improbable"),
    "mode": ("synchronous sync", "asynchronous async"),
    "requirement": ("required mandatory compulsory obligatory necessary", "optional voluntary unnecessary"),
    "visibility": ("public open-source", "private proprietary closed-source"),
    "scope": ("local locally", "remote remotely global globally"),
    "sameness": ("same identical equal alike", "different distinct unequal"),
    "frequency": ("always usually often frequently", "rarely seldom occasionally"),
    "access": ("read reads reading", "write writes writing"),
    "stability": ("static", "dynamic"),
    "connectivity": ("online", "offline"),
    "control": ("manual manually", "automatic automatically"),
    "explicitness": ("explicit explicitly", "implicit implicitly"),
    "reference": ("absolute", "relative"),
    "reality": ("physical", "virtual"),
    "rank": ("primary major", "secondary minor"),
    "activity": ("active", "passive"),
    "directness": ("direct directly", "indirect indirectly"),
    "formality": ("formal", "informal"),
    "orientation": ("horizontal horizontally", "vertical vertically"),
    "daytime": ("morning daytime", "evening night nighttime"),
    "season": ("summer", "winter"),
    "sentiment": ("love loves", "hate hates"),
    "agreement": ("agree agrees", "disagree disagrees"),
    "market": ("supply", "demand"),
    "balance": ("profit profits revenue income", "loss losses expense expenses"),
    "lending": ("lend lends lending", "borrow borrows borrowing"),
    "travel": ("arrive arrives arrival arrivals", "depart departs departure departures"),
    "contest": ("attack attacks offense offensive", "defend defends defense defensive"),
    "tier": ("frontend front-end client-side", "backend back-end server-side"),
    "level": ("beginner beginners introductory", "advanced expert experts"),
    "parity": ("even", "odd"),
    "acidity": ("acid acids acidic", "alkaline base bases"),
    "heading": ("forward forwards", "backward backwards reverse"),
    "passage": ("entrance entry", "exit"),
    "tense": ("past", "future"),
    "number": ("singular", "plural"),
    "dataset split": ("train training", "test testing"),
    "timing": ("early", "late"),
    "axis": ("row rows", "column columns"),
    "role": ("client", "server"),
    "sex": ("male men man boy boys masculine", "female women woman girl girls feminine"),
    "wealth": ("rich richer richest wealthy", "poor poorer poorest"),
    "ease": ("easy easier easiest simple simpler simplest", "hard harder hardest difficult"),
    "strength": ("strong stronger strongest", "weak weaker weakest"),
})

# Superlatives without the -est ending; "largest", "fastest" are found by their ending.
SUPERLATIVES = frozenset("most least best worst max maximum min minimum".split())
COMPARISON_WORDS = frozenset(
    "than compare compares compared comparing comparison versus vs difference differences differ differs".split()
)

# Question words that fix what kind of answer is wanted; two different ones ask different questions.
WH_WORDS = frozenset({"who", "whom", "whose", "when", "where", "why"})
HOW_QUANTITY = frozenset({"many", "much", "long", "old", "far", "often", "big", "tall", "fast"})
# "what year" asks when, "which country" asks where.
ASKED_BY_NOUN: dict[str, str] = {
    **dict.fromkeys("year years date day month century decade era time period".split(), "when"),
    **dict.fromkeys("country countries city cities place places location region continent state".split(), "where"),
    **dict.fromkeys("person people inventor author scientist".split(), "who"),
    **dict.fromkeys("reason reasons cause causes".split(), "why"),
}

# Calendar names -> one spelling. Lower-case "may", "march", "sun" are usually not dates.
_DAYS_AND_MONTHS = (
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday"
).split()
CALENDAR: dict[str, str] = {
    **{name: name for name in _DAYS_AND_MONTHS},
    **{name[:3]: name for name in _DAYS_AND_MONTHS},
    "sept": "september", "tues": "tuesday", "thurs": "thursday",
}
AMBIGUOUS_CALENDAR = frozenset({"may", "march", "mar", "sun", "sat", "wed", "jun", "dec", "jan"})

# Capitalised words at the start of a sentence that are ordinary words, not names.
COMMON_CAPITALISED = STOPWORDS | frozenset(
    "yes no ok okay hi hello hey thanks thank sorry note however therefore also then now first "
    "in on at if for to by after before when while during with without from as is are can could "
    "write create generate compare list summarize summarise translate find calculate define name "
    "suggest recommend help consider assume imagine suppose".split()
)

# Everyday synonyms: a swap inside one group does not change the question, so the
# swapped-word check treats the group as one word. Only near-exact substitutes belong here.
SYNONYMS: dict[str, str] = {
    word: group.split()[0]
    for group in (
    "importance significance relevance",
    "role purpose",
    "impact impacts effect effects influence influences consequence consequences",
    "meaning definition",
    "overview summary",
    "process processes mechanism mechanisms procedure procedures",
    "create creates creating make makes making build builds building generate generates generating "
    "produce produces producing",
    "get gets obtain obtains retrieve retrieves fetch fetches acquire acquires",
    "use uses utilize utilizes utilise utilises employ employs",
    "show shows display displays demonstrate demonstrates",
    "help helps assist assists aid aids",
    "choose chooses select selects pick picks",
    "need needs require requires requirement requirements",
    "change changes modify modifies alter alters",
    "fix fixes repair repairs resolve resolves solve solves",
    "improve improves enhance enhances boost boosts",
    "happen happens occur occurs",
    "find finds locate locates",
    "buy buys purchase purchases",
    "car cars automobile automobiles vehicle vehicles",
    "kid kids child children",
    "doctor doctors physician physicians",
    "job jobs occupation occupations",
    "feature features characteristic characteristics property properties trait traits attribute attributes",
    "part parts component components element elements piece pieces",
    "type types kind kinds sort sorts category categories",
    "example examples instance instances",
    "method methods way ways approach approaches technique techniques",
    "issue issues problem problems",
    "goal goals aim aims objective objectives",
    "answer answers reply replies response responses",
    "quick quickly fast rapidly",
    "begin begins start starts",
    "end ends finish finishes",
    "famous renowned well-known",
    "develop develops developed invent invents invented",
    )
    for word in group.split()
}
