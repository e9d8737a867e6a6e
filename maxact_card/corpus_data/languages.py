"""Multilingual and markup documents."""

from __future__ import annotations

import random
from collections.abc import Iterator

from .common import FIRST, OBJECTS, PLACES, RIVERS, TOWNS, WEEKDAYS, fill, person


_LANGS = {
    "fr": (
        ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
        (
            "Le marché ouvre à sept heures, mais les meilleurs fruits partent avant huit heures.",
            "{name} a acheté {n} pommes et une baguette encore chaude.",
            "Il pleut depuis {day} matin, et la rivière est montée de plusieurs centimètres.",
            "Nous prenons le train de nuit pour arriver au bord de la mer au lever du soleil.",
            "La bibliothèque municipale prête aussi des outils de jardinage.",
            "Mon voisin répare des vélos dans son garage le week-end.",
            "Le café du coin sert une soupe différente chaque jour de la semaine.",
            "{name} apprend le violon depuis {n} mois et joue déjà de petites mélodies.",
            "Les enfants ont construit une cabane avec des branches et une vieille couverture.",
            "En automne, les feuilles du vieux platane couvrent toute la place.",
        ),
    ),
    "de": (
        ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
        (
            "Der Zug nach Norden hatte heute {n} Minuten Verspätung.",
            "{name} backt jeden {day} Brot für die ganze Nachbarschaft.",
            "Im Winter frieren die kleinen Seen zu, und die Kinder gehen Schlittschuh laufen.",
            "Die alte Brücke wurde sorgfältig restauriert und ist wieder für Fußgänger geöffnet.",
            "Wir haben uns im Wald verlaufen und erst nach einer Stunde den Weg gefunden.",
            "Auf dem Balkon wachsen Tomaten, Basilikum und ein etwas zu großer Kürbis.",
            "Die Bibliothek hat bis zwanzig Uhr geöffnet, am Wochenende nur vormittags.",
            "{name} schreibt seit {n} Jahren jeden Abend ein paar Zeilen in ein Notizbuch.",
            "Nach dem Gewitter roch die ganze Stadt nach nassem Staub.",
            "Der Bäcker an der Ecke verkauft die besten Brezeln der Gegend.",
        ),
    ),
    "es": (
        ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
        (
            "El autobús pasa cada {n} minutos por la plaza mayor.",
            "{name} cultiva tomates y pimientos en la azotea de su edificio.",
            "El {day} por la tarde hay concierto gratuito en el parque.",
            "Mi abuela guarda las recetas de la familia en una caja de lata.",
            "Después de la lluvia, el olor a tierra mojada llenó toda la calle.",
            "Los pescadores salen antes del amanecer y vuelven al mediodía.",
            "La biblioteca del barrio organiza un club de lectura cada mes.",
            "{name} aprendió a nadar a los {n} años en un lago de montaña.",
            "El mercado cubierto tiene más de cien puestos de frutas y verduras.",
            "Caminamos por la playa hasta que se hizo de noche.",
        ),
    ),
    "it": (
        ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
        (
            "Il treno per la costa parte alle otto e arriva dopo {n} ore.",
            "{name} prepara il caffè per tutti ogni mattina.",
            "Il {day} il mercato del paese si riempie di formaggi e verdure.",
            "La vecchia torre dell'orologio è stata restaurata l'anno scorso.",
            "Dopo cena facciamo sempre una passeggiata lungo il fiume.",
            "Mio nonno conosce il nome di ogni albero del bosco.",
            "La biblioteca comunale presta anche dischi e giochi da tavolo.",
            "{name} studia il pianoforte da {n} anni con grande pazienza.",
            "In estate le finestre restano aperte fino a tardi.",
            "Il panettiere sotto casa inizia a lavorare alle quattro.",
        ),
    ),
    "pt": (
        ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo"),
        (
            "O barco para a ilha sai a cada {n} minutos durante o verão.",
            "{name} vende flores na feira todas as manhãs.",
            "Na {day} à noite há música ao vivo no café da esquina.",
            "A casa da minha avó tem um quintal cheio de limoeiros.",
            "Depois da chuva, as ruas de pedra ficaram brilhantes.",
            "Os pescadores consertam as redes sentados no cais.",
            "A biblioteca pública abre também aos domingos de manhã.",
            "{name} aprendeu a tocar violão com {n} anos.",
            "O mercado municipal é o melhor lugar para comprar fruta fresca.",
            "Ficamos a conversar na varanda até tarde.",
        ),
    ),
    "nl": (
        ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag"),
        (
            "De veerboot vaart elke {n} minuten naar de overkant.",
            "{name} fietst elke ochtend langs de gracht naar haar werk.",
            "Op {day} is er markt op het plein voor het stadhuis.",
            "In de winter schaatsen de kinderen op de bevroren sloot.",
            "De oude molen draait alleen nog op feestdagen.",
            "Mijn buurman kweekt tulpen in lange, rechte rijen.",
            "De bibliotheek heeft een leeshoek met uitzicht op het water.",
            "{name} woont al {n} jaar in hetzelfde huis aan de dijk.",
            "Na de regen rook de hele straat naar nat gras.",
            "We drinken koffie met appeltaart bij oma.",
        ),
    ),
    "ru": (
        ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье"),
        (
            "Поезд на север отправляется через {n} минут.",
            "{name} каждое утро поливает цветы на балконе.",
            "В {day} в городском парке будет бесплатный концерт.",
            "Зимой река замерзает, и дети катаются на коньках.",
            "Моя бабушка хранит старые письма в деревянной шкатулке.",
            "После дождя в лесу появилось много грибов.",
            "Библиотека работает до восьми часов вечера.",
            "{name} учится играть на гитаре уже {n} месяцев.",
            "На рынке продают свежий хлеб, мёд и яблоки.",
            "Мы гуляли по набережной до самого заката.",
        ),
    ),
    "zh": (
        ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
        (
            "火车还有{n}分钟就要出发了。",
            "{name}每天早上在公园里打太极拳。",
            "{day}下午图书馆有免费的书法课。",
            "雨停了以后，街上的空气特别清新。",
            "我奶奶做的饺子是全家最喜欢吃的。",
            "这条老街上有很多卖茶叶和点心的小店。",
            "秋天的时候，山上的树叶都变红了。",
            "{name}已经学了{n}年的钢琴。",
            "晚饭以后，我们常常沿着河边散步。",
            "市场里的水果又新鲜又便宜。",
        ),
    ),
    "ja": (
        ("月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"),
        (
            "電車はあと{n}分で駅に着きます。",
            "{name}さんは毎朝、川沿いを散歩しています。",
            "{day}の午後、公民館で料理教室があります。",
            "雨が上がると、町の空気がとても澄んでいました。",
            "祖母の家の庭には古い柿の木があります。",
            "この商店街には小さなパン屋が三軒もあります。",
            "秋になると、山の木々が赤や黄色に染まります。",
            "{name}さんはピアノを習って{n}年になります。",
            "図書館は夜八時まで開いています。",
            "夏祭りの夜、子どもたちは花火を見上げていました。",
        ),
    ),
    "ko": (
        ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"),
        (
            "기차가 {n}분 후에 출발합니다.",
            "{name} 씨는 매일 아침 공원에서 운동을 합니다.",
            "{day} 오후에 도서관에서 무료 강연이 있습니다.",
            "비가 그친 뒤에 거리가 아주 깨끗해졌습니다.",
            "할머니가 만든 김치는 언제나 맛있습니다.",
            "시장에는 신선한 과일과 채소가 가득합니다.",
            "가을이 되면 산이 붉게 물듭니다.",
            "{name} 씨는 기타를 배운 지 {n}년이 되었습니다.",
            "저녁을 먹고 나서 강가를 따라 산책했습니다.",
            "작은 빵집 앞에 사람들이 줄을 서 있었습니다.",
        ),
    ),
    "ar": (
        ("الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"),
        (
            "يغادر القطار بعد {n} دقيقة من المحطة الرئيسية.",
            "يشرب {name} الشاي مع أصدقائه كل مساء.",
            "يوم {day} يفتح السوق القديم أبوابه منذ الصباح الباكر.",
            "بعد المطر أصبحت رائحة الشوارع منعشة.",
            "تحتفظ جدتي بوصفات العائلة في دفتر قديم.",
            "المكتبة العامة مفتوحة حتى الساعة الثامنة مساءً.",
            "يتعلم {name} العزف على العود منذ {n} سنوات.",
            "جلسنا على شاطئ البحر حتى غروب الشمس.",
            "في الربيع تمتلئ الحدائق بالزهور الملونة.",
            "يبيع الخباز الخبز الطازج في الصباح.",
        ),
    ),
    "hi": (
        ("सोमवार", "मंगलवार", "बुधवार", "गुरुवार", "शुक्रवार", "शनिवार", "रविवार"),
        (
            "ट्रेन {n} मिनट में स्टेशन से निकलेगी।",
            "{name} हर सुबह पार्क में टहलने जाते हैं।",
            "{day} को पुस्तकालय में बच्चों के लिए कहानी का कार्यक्रम है।",
            "बारिश के बाद मिट्टी की खुशबू पूरे गाँव में फैल गई।",
            "दादी के हाथ का बना खाना सबको बहुत पसंद है।",
            "बाज़ार में ताज़े फल और सब्ज़ियाँ मिलती हैं।",
            "{name} पिछले {n} साल से सितार सीख रहे हैं।",
            "शाम को हम नदी के किनारे बैठकर बातें करते हैं।",
            "सर्दियों में सुबह घना कोहरा छा जाता है।",
            "छोटी सी दुकान में बहुत अच्छी चाय मिलती है।",
        ),
    ),
}


def _multilingual() -> Iterator[str]:
    rng = random.Random(1901)
    for round_ in range(12):
        for code in sorted(_LANGS):
            days, sentences = _LANGS[code]
            order = list(sentences)
            rng.shuffle(order)
            sep = "" if code in ("zh", "ja") else " "
            parts = [
                s.format(name=rng.choice(FIRST), n=rng.randrange(2, 60), day=rng.choice(days))
                for s in order[: rng.randrange(5, len(order) + 1)]
            ]
            if round_ % 3 == 2:  # a second paragraph in another language
                other = rng.choice([c for c in sorted(_LANGS) if c != code])
                o_days, o_sentences = _LANGS[other]
                o_sep = "" if other in ("zh", "ja") else " "
                extra = [s.format(name=rng.choice(FIRST), n=rng.randrange(2, 60), day=rng.choice(o_days)) for s in o_sentences[:4]]
                yield sep.join(parts) + "\n\n" + o_sep.join(extra)
            else:
                yield sep.join(parts)


# ---------------------------------------------------------------------------------------------
# markup


def _markup_item(rng: random.Random, kind: int) -> str:
    town = rng.choice(TOWNS)
    if kind == 0:
        steps = rng.sample(("Clone the repository", "Create a virtual environment", "Install the dependencies",
                            "Copy `config.example.toml` to `config.toml`", "Run the test suite", "Start the server"), 4)
        rows = "\n".join(f"| `{rng.choice(('--port', '--workers', '--log-level', '--timeout', '--data-dir'))}` | {rng.randrange(1, 9000)} | {rng.choice(('yes', 'no'))} |" for _ in range(rng.randrange(2, 5)))
        return (
            f"# {town} Tracker\n\nA small tool that records {rng.choice(('tide levels', 'bus arrivals', 'library loans', 'bird counts'))} for {town}.\n\n"
            f"## Getting started\n\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) +
            f"\n\n## Options\n\n| option | default | required |\n|---|---|---|\n{rows}\n\n"
            f"```bash\ntracker --port {rng.randrange(3000, 9000)} --data-dir ./data\n```\n"
        )
    if kind == 1:
        items = rng.sample(OBJECTS, 4)
        return (
            f"<article class=\"notice\">\n  <h2>{town} {rng.choice(('Summer Fair', 'Book Swap', 'Repair Café', 'Night Market'))}</h2>\n"
            f"  <p>Join us on <time datetime=\"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}\">{rng.choice(WEEKDAYS)}</time> at the {rng.choice(PLACES)}.</p>\n"
            "  <ul>\n" + "".join(f"    <li>{i.capitalize()}</li>\n" for i in items) +
            f"  </ul>\n  <p><a href=\"/events/{rng.randrange(100, 999)}\">More information</a></p>\n</article>"
        )
    if kind == 2:
        title = f"{town} walking routes"
        return (
            f"{title}\n{'=' * len(title)}\n\n.. note::\n   Routes are graded from 1 (easy) to 5 (hard).\n\n"
            + "\n".join(
                f"* **{rng.choice(RIVERS)} loop** -- {rng.randrange(3, 25)} km, grade {rng.randrange(1, 6)}, starts at the {rng.choice(PLACES)}"
                for _ in range(rng.randrange(3, 6))
            )
            + "\n"
        )
    if kind == 3:
        return (
            f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<catalog town=\"{town}\">\n"
            + "".join(
                f"  <book id=\"b{rng.randrange(100, 999)}\">\n    <title>{rng.choice(OBJECTS).title()} and the {rng.choice(RIVERS)}</title>\n"
                f"    <author>{person(rng)}</author>\n    <year>{rng.randrange(1900, 2024)}</year>\n  </book>\n"
                for _ in range(rng.randrange(2, 4))
            )
            + "</catalog>"
        )
    if kind == 4:
        return (
            "\\section{" + f"Results for {town}" + "}\n\\begin{itemize}\n"
            + "".join(f"  \\item Sample {i + 1}: ${rng.randrange(10, 999) / 10} \\pm {rng.randrange(1, 30) / 10}$ mm\n" for i in range(rng.randrange(3, 6)))
            + "\\end{itemize}\n\\begin{table}[h]\n\\centering\n\\begin{tabular}{lrr}\n\\hline\nsite & mean & n \\\\\n\\hline\n"
            + "".join(f"{rng.choice(RIVERS)} & {rng.randrange(10, 999) / 10} & {rng.randrange(5, 90)} \\\\\n" for _ in range(3))
            + "\\hline\n\\end{tabular}\n\\end{table}"
        )
    tasks = rng.sample(("book the hall", "print posters", "order chairs", "email volunteers", "test the speakers",
                        "buy tea and biscuits", "write the programme", "check the fire exits"), 5)
    return (
        f"## To do before the {town} meeting\n\n"
        + "\n".join(f"- [{'x' if rng.random() < 0.4 else ' '}] {t}" for t in tasks)
        + f"\n\n### Notes\n\n- Budget: **{rng.randrange(100, 2000)} €**\n  - spent so far: {rng.randrange(0, 100)}%\n- Contact: *{person(rng)}*\n"
        + f"\n> Remember to lock the {rng.choice(PLACES)} afterwards.\n"
    )


def _markup() -> Iterator[str]:
    rng = random.Random(2001)
    for i in range(120):
        kind = i % 6
        yield fill(rng, lambda: _markup_item(rng, kind), sep="\n\n")
