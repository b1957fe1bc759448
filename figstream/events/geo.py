"""Locations: v1's one string and v2's ``{city, region, country_code}``, both ways, vectorised.

v1 feeds are US-style ``"City, ST"`` strings with no country. :func:`split_locations` reads a
structure out of a v1 string only where rendering it back gives the very same string, so the
upcast loses nothing (``render(split(s)) == s`` for every string):

1. ``"City, Region, CC"`` with CC an ISO 3166-1 alpha-2 code other than US (no comma in a part);
2. ``"City, ST"`` with ST a US state, DC or territory code: region ST, country US;
3. ``"City, CC"`` with CC a non-US ISO code: country CC, no region;
4. anything else: the whole string is the city, region and country unknown.

:func:`render_locations` is the downcast: city, then region, then the country unless it is
US (v1's implicit country). Both run as Arrow kernels over a column: every v1 posting of a
rollout goes through the upcast, so it must cost what a column operation costs.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Officially assigned ISO 3166-1 alpha-2 codes (249).
_ISO_COUNTRIES_TEXT = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
ZW
"""
ISO_COUNTRIES = frozenset(_ISO_COUNTRIES_TEXT.split())
# USPS codes of the states, DC and the inhabited territories: the ST of a v1 "City, ST".
_US_REGIONS_TEXT = """
AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM
NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC AS GU MP PR VI
"""
US_REGIONS = frozenset(_US_REGIONS_TEXT.split())
HOME_COUNTRY = "US"  # v1's implicit country: never written in a v1 string

_FOREIGN = pa.array(sorted(ISO_COUNTRIES - {HOME_COUNTRY}))
_US_REGIONS = pa.array(sorted(US_REGIONS))
LOCATION_TYPE = pa.struct(
    [
        pa.field("city", pa.string(), nullable=False),
        pa.field("region", pa.string()),
        pa.field("country_code", pa.string()),
    ]
)


def _true(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False)


def split_locations(strings: pa.Array | pa.ChunkedArray) -> pa.StructArray:
    """v1 location strings as :data:`LOCATION_TYPE` structs (null where the string is null).

    String kernels, not regular expressions: the last four characters say whether a string
    ends in ``", XX"`` with XX a code, and only the few foreign ones are split further.
    """
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    tail = pc.utf8_slice_codeunits(strings, -2)
    head = pc.utf8_slice_codeunits(strings, 0, -4)
    shaped = _true(
        pc.and_(
            pc.equal(pc.utf8_slice_codeunits(strings, -4, -2), ", "),
            pc.greater_equal(pc.utf8_length(strings), 5),
        )
    )
    foreign = pc.and_(shaped, _true(pc.is_in(tail, _FOREIGN)))
    # "City, Region, CC": the head splits at its one comma into two non-empty parts
    candidates = pc.and_(foreign, _true(pc.equal(pc.count_substring(head, ","), 1)))
    city3 = region3 = pa.nulls(len(strings), pa.string())
    if pc.any(candidates).as_py():  # rare (non-US, with a region): split in Python
        pairs = [h.split(", ") for h in pc.filter(head, candidates).to_pylist()]
        pairs = [p if len(p) == 2 and p[0] and p[1] else [None, None] for p in pairs]
        city3 = pc.replace_with_mask(
            city3, candidates, pa.array([p[0] for p in pairs], pa.string())
        )
        region3 = pc.replace_with_mask(
            region3, candidates, pa.array([p[1] for p in pairs], pa.string())
        )
    null = pa.scalar(None, pa.string())
    is_three = pc.is_valid(city3)
    is_state = pc.and_not(pc.and_(shaped, _true(pc.is_in(tail, _US_REGIONS))), is_three)
    is_foreign = pc.and_not(pc.and_not(foreign, is_three), is_state)
    city = pc.if_else(is_three, city3, pc.if_else(pc.or_(is_state, is_foreign), head, strings))
    region = pc.if_else(is_three, region3, pc.if_else(is_state, tail, null))
    country = pc.if_else(
        is_three, tail, pc.if_else(is_state, HOME_COUNTRY, pc.if_else(is_foreign, tail, null))
    )
    return pa.StructArray.from_arrays(
        [city, region, country], fields=list(LOCATION_TYPE), mask=pc.is_null(strings)
    )


def render_locations(locations: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The v1 string of each :data:`LOCATION_TYPE` struct (null where the struct is null)."""
    if isinstance(locations, pa.ChunkedArray):
        locations = locations.combine_chunks()
    city = pc.struct_field(locations, "city")
    region = pc.struct_field(locations, "region")
    country = pc.struct_field(locations, "country_code")
    foreign = pc.if_else(_true(pc.not_equal(country, HOME_COUNTRY)), country, None)
    parts = [
        city,
        pc.fill_null(pc.binary_join_element_wise(", ", region, ""), ""),
        pc.fill_null(pc.binary_join_element_wise(", ", foreign, ""), ""),
    ]
    rendered = pc.binary_join_element_wise(*parts, "")
    return pc.if_else(pc.is_valid(locations), rendered, pa.scalar(None, pa.string()))


def split_location(text: str) -> dict[str, str | None]:
    """One v1 string as ``{city, region, country_code}`` (the column rule on one value)."""
    return split_locations(pa.array([text], pa.string()))[0].as_py()


def render_location(location: dict[str, str | None]) -> str:
    """One ``{city, region, country_code}`` as its v1 string: :func:`render_locations`'s rule
    in plain Python, because validation calls it per event (a test keeps the two equal)."""
    parts = [location["city"]]
    if location.get("region") is not None:
        parts.append(location["region"])
    country = location.get("country_code")
    if country is not None and country != HOME_COUNTRY:
        parts.append(country)
    return ", ".join(parts)
