"""ToolWorld's relations: the tools of each split, and the chains no question may use.

Train and test tasks share `RELATIONS` (they differ in entity names); the `warmup` split has its own
(`WARMUP_RELATIONS`), and so has the out-of-distribution split (`OOD_RELATIONS`): no tool of either
occurs in a train or test task. See `pact_cotrain.envs.toolworld` for the tasks built from them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    tool: str
    arg: str  # entity type taken; also the parameter's name
    out: str  # entity type returned, or a value kind
    key: str  # key of the JSON object the tool returns
    phrase: str  # noun phrase, "{x}" = the argument
    description: str
    family: str  # tools with similar names share a family: preferred as confusable distractors
    lo: int = 0  # value range (years for "year"/"date")
    hi: int = 0


RELATIONS: tuple[Relation, ...] = (
    Relation("get_birthplace", "person", "city", "birthplace", "the birthplace of {x}", "Return the city where a person was born.", "birth"),
    Relation("get_birth_year", "person", "year", "birth_year", "the birth year of {x}", "Return the year a person was born.", "birth", 1930, 2004),
    Relation("get_birth_date", "person", "date", "date_of_birth", "the date of birth of {x}", "Return a person's date of birth (YYYY-MM-DD).", "birth", 1930, 2004),
    Relation("get_employer", "person", "company", "employer", "the employer of {x}", "Return the company a person works for.", "employer"),
    Relation("get_ceo", "company", "person", "ceo", "the CEO of {x}", "Return the current chief executive officer of a company.", "ceo"),
    Relation("get_former_ceo", "company", "person", "former_ceo", "the former CEO of {x}", "Return the previous chief executive officer of a company.", "ceo"),
    Relation("get_headquarters", "company", "city", "headquarters", "the headquarters city of {x}", "Return the city where a company has its headquarters.", "headquarters"),
    Relation("get_founding_year", "company", "year", "founding_year", "the founding year of {x}", "Return the year a company was founded.", "founding", 1820, 2015),
    Relation("get_flagship_product", "company", "product", "flagship_product", "the flagship product of {x}", "Return the best-known product of a company.", "product"),
    Relation("get_manufacturer", "product", "company", "manufacturer", "the manufacturer of {x}", "Return the company that makes a product.", "manufacturer"),
    Relation("get_launch_date", "product", "date", "launch_date", "the launch date of {x}", "Return the date a product was launched (YYYY-MM-DD).", "launch", 1995, 2024),
    Relation("get_price", "product", "number", "price_usd", "the price in US dollars of {x}", "Return the list price of a product in US dollars.", "price", 15, 4999),
    Relation("get_population", "city", "number", "population", "the population of {x}", "Return the number of inhabitants of a city.", "population", 2000, 3000000),
    Relation("get_population_density", "city", "number", "population_density", "the population density of {x}", "Return a city's inhabitants per square kilometre.", "population", 15, 9000),
    Relation("get_mayor", "city", "person", "mayor", "the mayor of {x}", "Return the current mayor of a city.", "mayor"),
    Relation("get_former_mayor", "city", "person", "former_mayor", "the former mayor of {x}", "Return the previous mayor of a city.", "mayor"),
    Relation("get_country", "city", "country", "country", "the country of {x}", "Return the country a city is in.", "country"),
    Relation("get_capital", "country", "city", "capital", "the capital of {x}", "Return the capital city of a country.", "capital"),
)

# The warm-up split's relations: the same entity types, none of the tools above.
WARMUP_RELATIONS: tuple[Relation, ...] = (
    Relation("get_spouse", "person", "person", "spouse", "the spouse of {x}", "Return the person someone is married to.", "kin"),
    Relation("get_sibling", "person", "person", "sibling", "the sibling of {x}", "Return a person's brother or sister.", "kin"),
    Relation("get_height_cm", "person", "number", "height_cm", "the height in centimetres of {x}", "Return a person's height in centimetres.", "body", 140, 210),
    Relation("get_weight_kg", "person", "number", "weight_kg", "the weight in kilograms of {x}", "Return a person's weight in kilograms.", "body", 45, 120),
    Relation("get_sister_city", "city", "city", "sister_city", "the sister city of {x}", "Return a city's twinned sister city.", "twin"),
    Relation("get_area_km2", "city", "number", "area_km2", "the area in square kilometres of {x}", "Return a city's area in square kilometres.", "area", 10, 2000),
    Relation("get_charter_year", "city", "year", "charter_year", "the charter year of {x}", "Return the year a city received its charter.", "charter", 1100, 1990),
    Relation("get_main_rival", "company", "company", "main_rival", "the main rival of {x}", "Return a company's main competitor.", "rival"),
    Relation("get_parent_company", "company", "company", "parent_company", "the parent company of {x}", "Return the company that owns a company.", "rival"),
    Relation("get_employee_count", "company", "number", "employees", "the number of employees of {x}", "Return how many people a company employs.", "staff", 10, 200000),
    Relation("get_ipo_date", "company", "date", "ipo_date", "the IPO date of {x}", "Return the date a company was listed (YYYY-MM-DD).", "listing", 1950, 2023),
    Relation("get_chief_designer", "product", "person", "chief_designer", "the chief designer of {x}", "Return the person who designed a product.", "designer"),
    Relation("get_weight_grams", "product", "number", "weight_g", "the weight in grams of {x}", "Return a product's weight in grams.", "mass", 50, 9000),
    Relation("get_release_year", "product", "year", "release_year", "the release year of {x}", "Return the year a product was released.", "release", 1990, 2024),
    Relation("get_head_of_state", "country", "person", "head_of_state", "the head of state of {x}", "Return a country's head of state.", "leader"),
    Relation("get_largest_city", "country", "city", "largest_city", "the largest city of {x}", "Return a country's most populous city.", "bigcity"),
    Relation("get_independence_year", "country", "year", "independence_year", "the independence year of {x}", "Return the year a country became independent.", "independence", 1800, 1995),
    Relation("get_land_area", "country", "number", "land_area_km2", "the land area in square kilometres of {x}", "Return a country's land area in square kilometres.", "area", 1000, 900000),
)
# The out-of-distribution split's relations: the same entity types, none of the tools above.
OOD_RELATIONS: tuple[Relation, ...] = (
    Relation("get_mentor", "person", "person", "mentor", "the mentor of {x}", "Return the person who mentored someone.", "mentor"),
    Relation("get_alma_mater_city", "person", "city", "alma_mater_city", "the city where {x} studied", "Return the city of a person's university.", "study"),
    Relation("get_favourite_product", "person", "product", "favourite_product", "the favourite product of {x}", "Return the product a person likes best.", "favourite"),
    Relation("get_retirement_year", "person", "year", "retirement_year", "the retirement year of {x}", "Return the year a person retired.", "retire", 1970, 2024),
    Relation("get_founder", "company", "person", "founder", "the founder of {x}", "Return the person who founded a company.", "founder"),
    Relation("get_largest_customer", "company", "company", "largest_customer", "the largest customer of {x}", "Return the company that buys most from a company.", "customer"),
    Relation("get_research_centre", "company", "city", "research_centre", "the research centre city of {x}", "Return the city of a company's main research centre.", "research"),
    Relation("get_revenue_musd", "company", "number", "revenue_musd", "the revenue in million US dollars of {x}", "Return a company's yearly revenue in million US dollars.", "revenue", 5, 90000),
    Relation("get_successor_product", "product", "product", "successor_product", "the successor product of {x}", "Return the product that replaced a product.", "successor"),
    Relation("get_assembly_city", "product", "city", "assembly_city", "the assembly city of {x}", "Return the city where a product is assembled.", "assembly"),
    Relation("get_units_sold", "product", "number", "units_sold", "the number of units sold of {x}", "Return how many units of a product were sold.", "units", 100, 9000000),
    Relation("get_discontinuation_date", "product", "date", "discontinued_on", "the discontinuation date of {x}", "Return the date a product was discontinued (YYYY-MM-DD).", "discontinue", 1996, 2025),
    Relation("get_largest_employer", "city", "company", "largest_employer", "the largest employer in {x}", "Return the company employing most people in a city.", "city_employer"),
    Relation("get_police_chief", "city", "person", "police_chief", "the police chief of {x}", "Return the head of a city's police.", "police"),
    Relation("get_elevation_m", "city", "number", "elevation_m", "the elevation in metres of {x}", "Return a city's elevation above sea level in metres.", "elevation", 1, 3500),
    Relation("get_trading_partner", "country", "country", "trading_partner", "the main trading partner of {x}", "Return the country a country trades with most.", "trade"),
    Relation("get_national_carrier", "country", "company", "national_carrier", "the national airline of {x}", "Return the company that is a country's flag carrier.", "carrier"),
    Relation("get_prime_minister", "country", "person", "prime_minister", "the prime minister of {x}", "Return a country's head of government.", "premier"),
    Relation("get_constitution_year", "country", "year", "constitution_year", "the constitution year of {x}", "Return the year a country's constitution was adopted.", "constitution", 1780, 2015),
)
RELATION_BY_TOOL = {r.tool: r for r in RELATIONS + WARMUP_RELATIONS + OOD_RELATIONS}


def relations_for(split: str) -> tuple[Relation, ...]:
    return {"warmup": WARMUP_RELATIONS, "ood": OOD_RELATIONS}.get(split, RELATIONS)


# Consecutive hops that lead straight back to where they started ("the country of the capital
# of X" is X): such questions answer themselves, so chains never use them.
BACKTRACKS = {
    ("get_capital", "get_country"),
    ("get_ceo", "get_employer"),
    ("get_former_ceo", "get_employer"),
    ("get_flagship_product", "get_manufacturer"),
    ("get_manufacturer", "get_flagship_product"),
    ("get_spouse", "get_spouse"),
    ("get_sibling", "get_sibling"),
    ("get_sister_city", "get_sister_city"),
    ("get_main_rival", "get_main_rival"),
    ("get_trading_partner", "get_trading_partner"),
}
