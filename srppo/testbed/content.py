"""Built-in fact table the text families draw their content from.

Why a hand-written table: the embedded default must build its data offline and
deterministically, and a 135M model on CPU can only learn from very short, simple
answers. Every fact is one sentence of at most 8 words, with no commas, no digits
and no apostrophes, so that any fact satisfies the no_comma, word-limit and
case constraints after a plain transformation (upper/lower-casing, quoting ...).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Topic(NamedTuple):
    """A prompt subject ("rain") and the short facts a demonstration may state."""

    name: str
    facts: tuple[str, ...]


def _t(name: str, *facts: str) -> Topic:
    return Topic(name, tuple(facts))


TOPICS: tuple[Topic, ...] = (
    _t("cats", "Cats are small furry pets.", "Cats sleep for many hours each day.",
       "Cats use their whiskers to sense things."),
    _t("dogs", "Dogs are loyal animals that love people.", "Dogs have a very strong sense of smell.",
       "Many dogs enjoy long walks outside."),
    _t("rain", "Rain is water that falls from clouds.", "Rain helps plants and crops grow.",
       "Rain fills rivers and lakes."),
    _t("the sun", "The sun is a hot glowing star.", "The sun gives Earth light and heat.",
       "Plants use sunlight to make food."),
    _t("the moon", "The moon travels around the Earth.", "The moon reflects light from the sun.",
       "The moon causes ocean tides."),
    _t("bicycles", "Bicycles have two wheels and pedals.", "Riding a bicycle is good exercise.",
       "Bicycles do not burn any fuel."),
    _t("trees", "Trees release oxygen into the air.", "Tree roots hold soil in place.",
       "Some trees live for thousands of years."),
    _t("bees", "Bees collect nectar from flowers.", "Bees help flowers make seeds.",
       "Honey bees live together in hives."),
    _t("the ocean", "The ocean covers most of the Earth.", "The ocean is full of salty water.",
       "Whales and fish live in the ocean."),
    _t("snow", "Snow is made of tiny ice crystals.", "Snow falls when the air is cold.",
       "Every snowflake has six sides."),
    _t("apples", "Apples grow on trees.", "Apples come in many colors.",
       "Apples are a healthy crunchy fruit."),
    _t("books", "Books are full of stories and ideas.", "Reading books helps people learn.",
       "Some books are printed and some are digital."),
    _t("owls", "Owls hunt mostly at night.", "Owls can turn their heads very far.",
       "Owls fly almost silently."),
    _t("volcanoes", "Volcanoes are openings in the Earth.", "Melted rock flows out of volcanoes.",
       "Lava cools into hard rock."),
    _t("rivers", "Rivers carry fresh water to the sea.", "Rivers shape valleys over time.",
       "Many towns grew beside rivers."),
    _t("bread", "Bread is baked from flour and water.", "Yeast makes bread dough rise.",
       "People have baked bread for thousands of years."),
    _t("coffee", "Coffee is made from roasted beans.", "Coffee contains caffeine.",
       "Many people drink coffee in the morning."),
    _t("trains", "Trains run on metal rails.", "Trains can carry many people at once.",
       "Freight trains move heavy goods."),
    _t("clouds", "Clouds are made of tiny water drops.", "Dark clouds often bring rain.",
       "Clouds float high in the sky."),
    _t("frogs", "Frogs start life as tadpoles.", "Frogs can live on land and in water.",
       "Frogs catch insects with their tongues."),
    _t("penguins", "Penguins are birds that cannot fly.", "Penguins are very good swimmers.",
       "Most penguins live in the cold south."),
    _t("honey", "Honey is made by bees.", "Honey is sweet and sticky.",
       "Honey can last for a very long time."),
    _t("mountains", "Mountains are very tall landforms.", "The air is thin on high mountains.",
       "Snow often covers mountain tops."),
    _t("deserts", "Deserts get very little rain.", "Camels are well suited to deserts.",
       "Some deserts are very cold."),
    _t("whales", "Whales are huge animals of the sea.", "Whales breathe air through blowholes.",
       "Blue whales are the largest animals."),
    _t("lightning", "Lightning is a giant electric spark.", "Thunder is the sound of lightning.",
       "Lightning often strikes tall objects."),
    _t("tea", "Tea is made from dried leaves.", "Tea is often served hot.",
       "Green and black tea share one plant."),
    _t("chess", "Chess is a game for two players.", "Each chess player starts with sixteen pieces.",
       "Chess players try to trap the king."),
    _t("gardens", "Gardens grow flowers and vegetables.", "Garden plants need water and sun.",
       "Gardening can be calm and relaxing."),
    _t("maps", "Maps show where places are.", "A map legend explains its symbols.",
       "Maps help travelers find their way."),
    _t("clocks", "Clocks show the time of day.", "Many clocks have hour and minute hands.",
       "Digital clocks show the time in numbers."),
    _t("kites", "Kites fly when the wind lifts them.", "A string keeps a kite from drifting away.",
       "Kites come in many shapes."),
    _t("butterflies", "Butterflies start life as caterpillars.", "Butterflies drink nectar from flowers.",
       "Butterfly wings have bright patterns."),
    _t("the wind", "Wind is moving air.", "Wind can turn large turbines.",
       "Strong wind can bend trees."),
    _t("ice", "Ice is frozen water.", "Ice floats on water.",
       "Water turns to ice when it freezes."),
    _t("elephants", "Elephants are the largest land animals.", "Elephants use their trunks to grab food.",
       "Elephants live in close family groups."),
    _t("libraries", "Libraries lend books to people.", "Libraries are quiet places to read.",
       "Many libraries offer free computers."),
    _t("rainbows", "Rainbows appear when sunlight meets raindrops.", "A rainbow shows many colors.",
       "Rainbows form opposite the sun."),
    _t("boats", "Boats float on water.", "Some boats use sails to catch wind.",
       "Boats carry people across lakes and seas."),
    _t("stars", "Stars are huge balls of hot gas.", "The sun is the closest star.",
       "Stars look tiny because they are far away."),
)

# Function words too bland to make a meaningful "include the word X" constraint.
_STOPWORDS = frozenset(
    "about after their there these those which while other every often people many "
    "because where could would should being through".split()
)


def keyword_candidates(fact: str) -> list[str]:
    """Content words of a fact (lower-case, >= 5 letters): the keywords a prompt may demand.

    Drawn from the fact itself so the demonstration that states the fact contains the
    keyword as a whole word by construction.
    """
    words = re.findall(r"[A-Za-z]+", fact)
    return [w.lower() for w in words if len(w) >= 5 and w.lower() not in _STOPWORDS]
