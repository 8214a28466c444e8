"""Unit tests for keyapi_mcp.models: id normalisation, tolerant row parsing, untrusted-text cleaning."""

from __future__ import annotations

import math

import pytest

from keyapi_mcp.core.ids import MAX_VIDEO_IDS, normalize_video_ids
from keyapi_mcp.core.rows import MAX_HASHTAGS, UpstreamRow, parse_rows, split_hashtags
from keyapi_mcp.core.text import MAX_TEXT_CHARS, clean_text
from keyapi_mcp.errors import InvalidInput
from keyapi_mcp.upstream.demo import DOCUMENTED_ROW, DOCUMENTED_VIDEO_ID

DOC_ID = DOCUMENTED_VIDEO_ID
OTHER_ID = "7300000000000000001"
THIRD_ID = "7300000000000000002"


def _distinct_ids(n: int) -> list[str]:
    return [str(7_400_000_000_000_000_000 + i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# normalize_video_ids


def test_plain_numeric_ids_pass_through_in_order() -> None:
    assert normalize_video_ids([DOC_ID, OTHER_ID]) == [DOC_ID, OTHER_ID]


@pytest.mark.parametrize(
    "item",
    [
        f"https://www.tiktok.com/@someone/video/{DOC_ID}",
        f"https://www.tiktok.com/@someone/video/{DOC_ID}?is_from_webapp=1&sender_device=pc",
        f"https://www.tiktok.com/@some.one_2/video/{DOC_ID}/",
        f"https://www.tiktok.com/@someone/video/{DOC_ID}#comments",
        f"http://www.tiktok.com/@someone/video/{DOC_ID}",
        f"www.tiktok.com/@someone/video/{DOC_ID}",
        f"www.tiktok.com/@someone/video/{DOC_ID}?lang=en",
        f"tiktok.com/@someone/video/{DOC_ID}",
        f"https://m.tiktok.com/v/{DOC_ID}.html",
        f"https://m.tiktok.com/v/{DOC_ID}.html?u_code=abc",
        f"m.tiktok.com/@someone/video/{DOC_ID}",
        f"HTTPS://WWW.TIKTOK.COM/@Someone/VIDEO/{DOC_ID}",
        f"  https://www.tiktok.com/@someone/video/{DOC_ID}  ",
        f" {DOC_ID} ",
    ],
)
def test_tiktok_video_urls_with_or_without_scheme_and_query_give_the_numeric_id(item: str) -> None:
    assert normalize_video_ids([item]) == [DOC_ID]


def test_comma_joined_ids_and_urls_in_one_item_are_split() -> None:
    item = f"{DOC_ID}, https://www.tiktok.com/@a/video/{OTHER_ID}?x=1 ,{THIRD_ID}"
    assert normalize_video_ids([item]) == [DOC_ID, OTHER_ID, THIRD_ID]


def test_empty_segments_between_commas_are_ignored() -> None:
    assert normalize_video_ids([f"{DOC_ID},,{OTHER_ID},"]) == [DOC_ID, OTHER_ID]


def test_duplicates_are_dropped_keeping_first_occurrence_order() -> None:
    items = [OTHER_ID, f"https://www.tiktok.com/@a/video/{DOC_ID}", OTHER_ID, f"{DOC_ID},{THIRD_ID}", DOC_ID]
    assert normalize_video_ids(items) == [OTHER_ID, DOC_ID, THIRD_ID]


def test_url_and_bare_id_for_the_same_video_count_once() -> None:
    assert normalize_video_ids([DOC_ID, f"https://m.tiktok.com/v/{DOC_ID}.html"]) == [DOC_ID]


def test_fifty_distinct_ids_are_accepted() -> None:
    ids = _distinct_ids(MAX_VIDEO_IDS)
    assert normalize_video_ids(ids) == ids


def test_fifty_one_items_with_one_duplicate_are_accepted() -> None:
    ids = _distinct_ids(MAX_VIDEO_IDS)
    items = [*ids, ids[7]]
    assert len(items) == MAX_VIDEO_IDS + 1
    assert normalize_video_ids(items) == ids


def test_fifty_one_distinct_ids_are_rejected_as_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_video_ids(_distinct_ids(MAX_VIDEO_IDS + 1))
    text = str(info.value)
    assert text.startswith("[invalid_input]")
    assert "51" in text
    assert str(MAX_VIDEO_IDS) in text


def test_fifty_one_distinct_ids_packed_into_one_comma_joined_item_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        normalize_video_ids([",".join(_distinct_ids(MAX_VIDEO_IDS + 1))])


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "12ab34",
        "7521783049722285367x",
        "https://example.com/video/7521783049722285367",
        "https://www.tiktok.com/@someone",
        "https://www.tiktok.com/@someone/photo/7521783049722285367",
        "https://tiktok.com.evil.example/@a/video/7521783049722285367",
        "https://evil.example/tiktok.com/@a/video/7521783049722285367",
        "-7521783049722285367",
        "1" * 26,
    ],
)
def test_an_item_that_is_not_an_id_or_video_url_is_rejected_naming_the_item(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_video_ids([DOC_ID, bad])
    text = str(info.value)
    assert text.startswith("[invalid_input]")
    assert bad[:60] in text
    # ...and says what to pass instead.
    assert "/video/<id>" in text


@pytest.mark.parametrize(
    "short_link",
    ["https://vm.tiktok.com/ZMabc123/", "vm.tiktok.com/ZMabc123", "https://vt.tiktok.com/ZSxyz/"],
)
def test_short_links_are_rejected_because_they_cannot_be_resolved_offline(short_link: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_video_ids([short_link])
    text = str(info.value)
    assert text.startswith("[invalid_input]")
    assert short_link in text
    assert "short link" in text
    assert "/video/<id>" in text


def test_an_invalid_item_inside_a_comma_joined_list_is_named_on_its_own() -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_video_ids([f"{DOC_ID},abc,{OTHER_ID}"])
    assert "'abc'" in str(info.value)


@pytest.mark.parametrize("items", [[], [""], ["   "], [","], [" , "]])
def test_empty_input_is_rejected(items: list[str]) -> None:
    with pytest.raises(InvalidInput):
        normalize_video_ids(items)


def test_a_non_string_item_is_rejected_as_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        normalize_video_ids([123])  # type: ignore[list-item]


def test_a_very_long_bad_item_is_shortened_and_its_control_characters_are_masked() -> None:
    bad = "x" * 500 + "\x1b[31m"
    with pytest.raises(InvalidInput) as info:
        normalize_video_ids([bad])
    text = str(info.value)
    assert "x" * 500 not in text
    assert "\x1b" not in text
    assert "xxxxxxxx" in text


# ---------------------------------------------------------------------------------------------
# UpstreamRow: tolerant parsing


def test_the_documented_example_row_parses_with_numbers_sent_as_strings_converted() -> None:
    row = UpstreamRow.model_validate(DOCUMENTED_ROW)
    assert row.video_id == DOC_ID
    assert row.product_id == "1729422228922143703"
    assert row.user_id == "7190508362273735722"
    assert row.create_time == 1751301603
    assert row.data_size == 6728409
    assert row.width == 576
    assert row.height == 1024
    assert row.duration == 164
    assert row.total_views_cnt == 33635675
    assert row.total_video_sale_cnt == 4479
    assert row.total_video_sale_gmv_amt == pytest.approx(133621.6)
    assert row.ratio == "540p"
    assert row.region == "US"


def test_missing_optional_fields_become_none() -> None:
    row = UpstreamRow.model_validate({"video_id": DOC_ID, "product_id": "1"})
    assert row.video_id == DOC_ID
    assert row.product_id == "1"
    for name in UpstreamRow.model_fields:
        if name not in ("video_id", "product_id"):
            assert getattr(row, name) is None, name


def test_explicit_nulls_become_none() -> None:
    raw = dict.fromkeys(UpstreamRow.model_fields)
    row = UpstreamRow.model_validate(raw)
    assert all(getattr(row, name) is None for name in UpstreamRow.model_fields)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("33635675", 33635675),
        (" 4479 ", 4479),
        ("1,234,567", 1234567),
        ("12.0", 12),
        ("1.5e3", 1500),
        (12.0, 12),
        (7, 7),
        ("9007199254740993", 9007199254740993),  # above 2**53: must not be rounded through a float
        ("-3", -3),
        ("", None),
        ("n/a", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        (False, None),
        ([1, 2], None),
        ({"n": 1}, None),
        ("9" * 41, None),
    ],
)
def test_integer_fields_convert_what_they_can_and_null_the_rest(value: object, expected: int | None) -> None:
    row = UpstreamRow.model_validate({"video_id": DOC_ID, "product_id": "1", "total_views_cnt": value})
    assert row.total_views_cnt == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("133621.6", 133621.6),
        (133621.6, 133621.6),
        (42, 42.0),
        ("1,000.5", 1000.5),
        (" 7 ", 7.0),
        ("abc", None),
        ("NaN", None),
        ("inf", None),
        (float("nan"), None),
        (float("-inf"), None),
        (True, None),
        ([], None),
        ({}, None),
    ],
)
def test_float_fields_convert_what_they_can_and_null_the_rest(value: object, expected: float | None) -> None:
    row = UpstreamRow.model_validate({"video_id": DOC_ID, "product_id": "1", "total_video_sale_gmv_amt": value})
    result = row.total_video_sale_gmv_amt
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
        assert math.isfinite(result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7521783049722285367, "7521783049722285367"),  # JSON number id: Python keeps it exact
        (12.0, "12"),
        ("  7521783049722285367 ", "7521783049722285367"),
        ("", None),
        ("   ", None),
        ("a\nb", None),
        ("x" * 65, None),
        (True, None),
        (float("nan"), None),
        ([DOC_ID], None),
        ({"id": DOC_ID}, None),
    ],
)
def test_id_fields_accept_strings_and_numbers_and_reject_unusable_values(value: object, expected: str | None) -> None:
    row = UpstreamRow.model_validate({"video_id": value, "product_id": value})
    assert row.video_id == expected
    assert row.product_id == expected


def test_text_fields_accept_numbers_and_null_wrong_types() -> None:
    row = UpstreamRow.model_validate(
        {"video_id": DOC_ID, "product_id": "1", "region": 5, "ratio": ["540p"], "video_desc": {"t": 1}}
    )
    assert row.region == "5"
    assert row.ratio is None
    assert row.video_desc is None


def test_unknown_upstream_fields_are_ignored() -> None:
    row = UpstreamRow.model_validate({**DOCUMENTED_ROW, "brand_new_field": {"nested": [1, 2]}})
    assert row.video_id == DOC_ID
    assert not hasattr(row, "brand_new_field")


# ---------------------------------------------------------------------------------------------
# parse_rows


def test_parse_rows_keeps_good_rows_in_order_without_warnings() -> None:
    second = {**DOCUMENTED_ROW, "product_id": "2"}
    rows, warnings = parse_rows([DOCUMENTED_ROW, second])
    assert [r.product_id for r in rows] == ["1729422228922143703", "2"]
    assert warnings == []


def test_parse_rows_skips_rows_without_video_or_product_id_and_counts_them_in_one_warning() -> None:
    raw = [
        DOCUMENTED_ROW,
        {**DOCUMENTED_ROW, "video_id": None},
        {k: v for k, v in DOCUMENTED_ROW.items() if k != "product_id"},
        {**DOCUMENTED_ROW, "product_id": ""},
        {**DOCUMENTED_ROW, "video_id": ["not", "an", "id"]},
        "not a row",
        None,
        42,
        {**DOCUMENTED_ROW, "product_id": "2"},
    ]
    rows, warnings = parse_rows(raw)
    assert [r.product_id for r in rows] == ["1729422228922143703", "2"]
    assert len(warnings) == 1
    assert "7" in warnings[0]
    assert "video_id/product_id" in warnings[0]


def test_parse_rows_of_nothing_is_empty_without_warnings() -> None:
    assert parse_rows([]) == ([], [])


def test_parse_rows_never_raises_on_a_row_of_wrong_types_everywhere() -> None:
    junk = {name: {"bad": [1]} for name in UpstreamRow.model_fields}
    junk.update(video_id=DOC_ID, product_id="9")
    rows, warnings = parse_rows([junk])
    assert len(rows) == 1
    assert rows[0].total_views_cnt is None
    assert rows[0].video_desc is None
    assert warnings == ["dropped 1 non-numeric upstream user_id value(s)"]


# ---------------------------------------------------------------------------------------------
# clean_text and split_hashtags


def test_clean_text_passes_none_through() -> None:
    assert clean_text(None) is None


def test_clean_text_keeps_ordinary_text_and_emoji() -> None:
    assert clean_text("he made our entire week FR 🥹 #SmallBusiness") == "he made our entire week FR 🥹 #SmallBusiness"


def test_clean_text_strips_control_characters() -> None:
    assert clean_text("a\x00b\x07c\x1b[31md\x7fe\x9bf") == "abcde"  # escape sequences go whole


def test_clean_text_treats_every_ascii_character_as_the_unicode_categories_do() -> None:
    # ASCII text takes a translate-table path; it must drop and keep exactly what the per-character path does.
    every = "".join(chr(code) for code in range(128))
    for text in (every, every[::-1], f"x{every}y", "US", "9:16\x00", "\t\x7f\r"):
        assert clean_text(text) == clean_text(text + "é").removesuffix("é").rstrip()


def test_clean_text_turns_newlines_and_tabs_into_single_spaces() -> None:
    assert clean_text("  line one\n\n\tline two\r\nthree  ") == "line one line two three"


@pytest.mark.parametrize(
    "invisible",
    [
        "\u202e",  # right-to-left override
        "\u202d",  # left-to-right override
        "\u2066",  # left-to-right isolate
        "\u2069",  # pop directional isolate
        "\u200b",  # zero-width space
        "\u200c",  # zero-width non-joiner
        "\u2060",  # word joiner
        "\ufeff",  # byte order mark / zero-width no-break space
        "\U000e0041",  # tag character (invisible "ASCII smuggling")
        "\ue000",  # private use
    ],
)
def test_clean_text_strips_bidi_overrides_zero_width_and_invisible_characters(invisible: str) -> None:
    assert clean_text(f"safe{invisible}text{invisible}") == "safetext"


def test_clean_text_keeps_the_zero_width_joiner_inside_emoji_sequences() -> None:
    family = "👨\u200d👩\u200d👧"
    assert clean_text(family) == family


def test_clean_text_caps_length_with_an_ellipsis() -> None:
    out = clean_text("y" * (MAX_TEXT_CHARS + 100))
    assert out is not None
    assert len(out) == MAX_TEXT_CHARS
    assert out.endswith("…")


def test_clean_text_honours_a_custom_limit_and_leaves_short_text_alone() -> None:
    assert clean_text("abcdefghij", limit=5) == "abcd…"
    assert clean_text("abcde", limit=5) == "abcde"


def test_clean_text_measures_the_cap_after_stripping() -> None:
    assert clean_text("ab" + "\u200b" * 100 + "cd", limit=5) == "abcd"


def test_split_hashtags_from_the_documented_example() -> None:
    assert split_hashtags("#SmallBusiness #startup #proteinsnacks ") == ["#SmallBusiness", "#startup", "#proteinsnacks"]


def test_split_hashtags_accepts_commas_drops_duplicates_bare_hashes_and_plain_words() -> None:
    assert split_hashtags("#a,#b  #a # plain\n#c") == ["#a", "#b", "#c"]


def test_split_hashtags_of_nothing_is_an_empty_list() -> None:
    assert split_hashtags(None) == []
    assert split_hashtags("") == []
    assert split_hashtags("no tags here") == []


def test_split_hashtags_strips_invisible_characters_and_caps_count_and_length() -> None:
    tags = split_hashtags("#ok\u202e " + " ".join(f"#t{i}" for i in range(100)) + " #" + "z" * 300)
    assert tags[0] == "#ok"
    assert len(tags) == MAX_HASHTAGS
    assert all(len(t) <= 100 for t in tags)
    assert all("\u202e" not in t for t in tags)


def test_split_hashtags_caps_an_overlong_tag() -> None:
    (tag,) = split_hashtags("#" + "z" * 300)
    assert len(tag) == 100
