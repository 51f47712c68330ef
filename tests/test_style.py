"""The shared figure style: one fixed, distinct colour and marker a name, for every paper's figures."""

from __future__ import annotations

import pytest

from poisonlab.attribution import ATTRIBUTORS
from poisonlab.defenses import DEFENSES
from poisonlab.fewshot import METHODS as FEWSHOT_METHODS
from poisonlab.models import MODELS
from poisonlab.poisons import POISONS
from poisonlab.reporting import style


@pytest.mark.parametrize("kind,registry", [("poison", POISONS), ("defense", DEFENSES), ("arch", MODELS),
                                           ("method", ATTRIBUTORS), ("method", FEWSHOT_METHODS)])
def test_every_registered_name_has_its_own_colour_and_marker(kind, registry):
    # A new poison (defense, model) gets an entry in style.STYLES with its registration, or this fails.
    assert set(registry.names()) <= set(style.STYLES[kind])
    looks = [(look.colour, look.marker) for look in style.STYLES[kind].values()]
    assert len(set(looks)) == len(looks)


@pytest.mark.parametrize("kind", ["poison", "defense"])
def test_a_family_panel_never_repeats_a_colour(kind):
    reference = style.STYLES[kind][style.REFERENCE[kind]].colour
    for family, members in style.FAMILIES[kind].items():
        colours = [style.style_of(kind, name).colour for name in members]
        assert len(set(colours)) == len(colours) and reference not in colours, family
    grouped = [name for members in style.FAMILIES[kind].values() for name in members]
    assert sorted([*grouped, style.REFERENCE[kind]]) == sorted(style.STYLES[kind])  # every name in one family


def test_colours_are_from_the_categorical_palette_and_black():
    used = {look.colour for table in style.STYLES.values() for look in table.values()}
    assert used <= {*style.PALETTE, style.BLACK}


def test_names_outside_the_table_still_get_one_fixed_style():
    assert style.style_of("defense", "jpeg-30") == style.style_of("defense", "jpeg")  # a numbered defense
    assert style.style_of("poison", "regions-16") != style.style_of("poison", "regions-4")  # not numbered ones
    new = style.style_of("method", "ssl-esvm")
    assert new == style.style_of("method", "ssl-esvm") and new.colour in style.PALETTE
    with pytest.raises(ValueError, match="unknown kind of name 'colour'"):
        style.style_of("colour", "red")


def test_facets_split_only_past_eight_lines_and_keep_the_reference_in_each():
    few = ["clean", "em", "tap", "cuda"]
    assert style.facets("poison", few) == [("", [0, 1, 2, 3])]
    many = ["clean", "cuda", "em", "tap", "ar", "ops", "lsp", "rem", "em-class", "new-poison"]
    assert style.facets("poison", many) == [
        ("error-minimizing", [0, 2, 7, 8]), ("error-maximizing", [0, 3]), ("synthetic noise", [0, 5, 6]),
        ("autoregressive and convolution", [0, 1, 4]), ("other", [0, 9]),
    ]
    assert all(len(members) <= 3 for _, members in style.facets("poison", many, max_lines=3))
