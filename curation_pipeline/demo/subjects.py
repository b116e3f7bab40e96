"""What the demo images show: the scikit-image photos and the words captions are built from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Subject:
    """What an image shows, in words a caption can be built from."""

    name: str
    word: str
    caption: str
    translations: dict[str, str] = field(default_factory=dict)
    mirror: bool = True  # False where a mirrored image would no longer fit the caption.


# Photos bundled in the scikit-image wheel (so no download) whose docstrings state CC0,
# public domain or no known copyright restrictions.
PHOTOS = [
    Subject("astronaut", "astronaut", "Portrait of a smiling astronaut in an orange flight suit, holding a helmet "
            "in front of an American flag.", {
        "de": "Porträt einer lächelnden Astronautin im orangefarbenen Raumanzug vor einer amerikanischen Flagge.",
        "es": "Retrato de una astronauta sonriente con traje naranja delante de una bandera estadounidense.",
        "fr": "Portrait d'une astronaute souriante en combinaison orange devant un drapeau américain.",
        "zh": "一位身穿橙色宇航服、面带微笑的宇航员站在美国国旗前的肖像。",
    }, mirror=False),
    Subject("coffee", "coffee", "A red cup of coffee on a matching saucer with a spoon, on a wooden table.", {
        "de": "Eine rote Tasse Kaffee mit Untertasse und Löffel auf einem Holztisch.",
        "es": "Una taza roja de café con platillo y cuchara sobre una mesa de madera.",
        "fr": "Une tasse de café rouge avec sa soucoupe et une cuillère sur une table en bois.",
        "zh": "木桌上放着一杯咖啡，红色的杯子配有茶碟和勺子。",
    }),
    Subject("chelsea", "cat", "Close-up of a tabby cat with green eyes looking at the camera.", {
        "de": "Nahaufnahme einer getigerten Katze mit grünen Augen.",
        "es": "Primer plano de un gato atigrado con ojos verdes.",
        "fr": "Gros plan d'un chat tigré aux yeux verts.",
        "zh": "一只绿眼睛的虎斑猫的特写。",
    }),
    Subject("rocket", "rocket", "A rocket standing on the launch pad between lightning towers at dusk.", {
        "de": "Eine Rakete auf der Startrampe zwischen Blitzschutztürmen in der Abenddämmerung.",
        "es": "Un cohete en la plataforma de lanzamiento entre torres pararrayos al anochecer.",
        "fr": "Une fusée sur son pas de tir entre des paratonnerres au crépuscule.",
        "zh": "黄昏时分矗立在发射台上、位于避雷塔之间的火箭。",
    }),
    Subject("camera", "photographer", "Black-and-white photo of a man in a dark coat looking through a camera on a "
            "tripod in a field."),
    Subject("coins", "coins", "Greyscale photo of two dozen old coins arranged in rows on a dark background.",
            {"de": "Zwei Dutzend alte Münzen in Reihen auf dunklem Hintergrund."}),
    Subject("hubble_deep_field", "galaxies",
            "Hubble Deep Field image of hundreds of distant galaxies against black space."),
    Subject("immunohistochemistry", "tissue",
            "Microscope image of tissue with brown immunohistochemical staining and blue nuclei."),
    Subject("text", "notes", "Handwritten mathematical notes on a sheet of paper, photographed at an angle.",
            mirror=False),
    Subject("horse", "horse", "Black silhouette of a horse standing on a white background.", {
        "es": "Silueta negra de un caballo de pie sobre un fondo blanco.",
        "fr": "Silhouette noire d'un cheval debout sur un fond blanc.",
    }),
    Subject("brick", "bricks", "Close-up of a grey brick wall seen at an angle."),
    Subject("grass", "grass", "Greyscale close-up of grass blades filling the frame."),
    Subject("gravel", "gravel", "Greyscale close-up of a bed of small gravel stones."),
    Subject("retina", "retina", "Fundus photograph of a human retina showing the optic disc and blood vessels."),
]
PHOTO_BY_NAME = {s.name: s for s in PHOTOS}
