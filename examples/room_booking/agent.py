"""A meeting-room booking agent: your own tools, per-episode state, a reward and traced tasks.

Everything PACT needs from a user, in the shape TRL's GRPOTrainer takes it:

* `RoomBookingEnv`, an `environment_factory`: one instance per rollout; `reset(**row)` builds that
  episode's calendar from the row's columns; every other public method is a tool (its schema comes from
  the type hints and the Google-style docstring); `get_reward()` scores the finished episode.
* `make_tasks(n, seed)`: task rows (`prompt`, the row's calendar in `calendar_seed`, and an expert
  `trace` in the project's trace format) for training and held-out evaluation.

A request reads "Book the smallest room that seats 6 people on Tuesday at 14:00 for 'Design review',
then tell me which room." The expert finds the rooms that fit, checks them smallest first, books the
first free one and names it. The reward is 1 for exactly that booking, 0.5 for a booking at the right
time in a free room that fits but is not the smallest, 0 otherwise (and 0 whenever a second booking was
made).
"""

from __future__ import annotations

import json
import random

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
HOURS = list(range(9, 18))
ROOM_NAMES = ["Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel", "Juniper", "Larch",
              "Maple", "Oak", "Pine", "Rowan", "Spruce", "Willow"]
TITLES = ["Design review", "Sprint planning", "Budget sync", "Interview loop", "Quarterly review",
          "Onboarding", "Incident retro", "Roadmap chat"]


def calendar(seed: int) -> tuple[dict[str, int], set[tuple[str, str, int]]]:
    """(room -> capacity, booked (room, day, hour) slots) of one episode, from its seed."""
    rng = random.Random(seed)
    rooms = {name: rng.choice([2, 4, 4, 6, 8, 10, 12, 16]) for name in rng.sample(ROOM_NAMES, 6)}
    booked = {(room, day, hour) for room in rooms for day in DAYS for hour in HOURS if rng.random() < 0.35}
    return rooms, booked


class RoomBookingEnv:
    """One episode's calendar. Public methods other than `reset` and `get_reward` are the tools."""

    def reset(self, calendar_seed: int, people: int, day: str, hour: int, title: str, **row) -> None:
        self.rooms, self.booked = calendar(calendar_seed)
        self.request = (people, day, hour, title)
        self.bookings: list[tuple[str, str, int, str]] = []
        return None

    def find_rooms(self, min_capacity: int) -> str:
        """Find the meeting rooms that seat at least a number of people, smallest first.

        Args:
            min_capacity: How many people the room must seat.
        """
        fits = sorted((cap, name) for name, cap in self.rooms.items() if cap >= min_capacity)
        return json.dumps([{"room": name, "capacity": cap} for cap, name in fits])

    def is_free(self, room: str, day: str, hour: int) -> str:
        """Check whether a room is free for one hour.

        Args:
            room: The room's name, as find_rooms gives it.
            day: A weekday, e.g. "Tuesday".
            hour: The starting hour, 9 to 17.
        """
        if room not in self.rooms:
            raise ValueError(f"no room named {room!r}")
        busy = (room, day, hour) in self.booked or any(b[:3] == (room, day, hour) for b in self.bookings)
        return "booked" if busy else "free"

    def book(self, room: str, day: str, hour: int, title: str) -> str:
        """Book a room for one hour.

        Args:
            room: The room's name.
            day: A weekday, e.g. "Tuesday".
            hour: The starting hour, 9 to 17.
            title: The meeting's title.
        """
        if self.is_free(room, day, hour) != "free":
            raise ValueError(f"{room} is already booked on {day} at {hour}:00")
        self.bookings.append((room, day, hour, title))
        return f"booked {room} on {day} at {hour}:00 for {title!r}"

    def get_reward(self) -> float:
        return booking_reward(self.rooms, self.booked, self.request, self.bookings)


def smallest_free_room(rooms: dict[str, int], booked: set, people: int, day: str, hour: int) -> str | None:
    for cap, name in sorted((cap, name) for name, cap in rooms.items() if cap >= people):
        if (name, day, hour) not in booked:
            return name
    return None


def booking_reward(rooms, booked, request, bookings) -> float:
    people, day, hour, title = request
    if len(bookings) != 1:
        return 0.0
    room, b_day, b_hour, b_title = bookings[0]
    if (b_day, b_hour) != (day, hour) or b_title.strip().lower() != title.lower() or rooms[room] < people:
        return 0.0
    return 1.0 if room == smallest_free_room(rooms, booked, people, day, hour) else 0.5


def expert_trace(rooms, booked, people: int, day: str, hour: int, title: str) -> list[dict]:
    """The expert's turns in the project's trace format: find, check smallest first, book, answer."""
    trace, n = [], 0

    def call(reasoning: str, name: str, arguments: dict, output: str) -> None:
        nonlocal n
        trace.append({"role": "assistant", "content": "", "reasoning": reasoning,
                      "tool_calls": [{"id": f"c{n}", "name": name, "arguments": arguments}]})
        trace.append({"role": "tool", "tool_call_id": f"c{n}", "name": name, "content": output})
        n += 1

    fits = sorted((cap, name) for name, cap in rooms.items() if cap >= people)
    call(f"I need a room for {people} people. First, the rooms that fit.", "find_rooms", {"min_capacity": people},
         json.dumps([{"room": name, "capacity": cap} for cap, name in fits]))
    for _, name in fits:
        free = (name, day, hour) not in booked
        call(f"Check {name}, the smallest remaining.", "is_free", {"room": name, "day": day, "hour": hour},
             "free" if free else "booked")
        if free:
            call(f"{name} is free, so I book it.", "book", {"room": name, "day": day, "hour": hour, "title": title},
                 f"booked {name} on {day} at {hour}:00 for {title!r}")
            trace.append({"role": "assistant", "content": f"I booked {name} for {title!r} on {day} at {hour}:00."})
            return trace
    raise ValueError("no free room")


def make_tasks(n: int, seed: int, prefix: str) -> list[dict]:
    """`n` solvable requests with their expert traces, as task rows (TRL's `prompt` column plus ours)."""
    rng, rows = random.Random(seed), []
    while len(rows) < n:
        calendar_seed = rng.randrange(10**6)
        rooms, booked = calendar(calendar_seed)
        people, day, hour, title = rng.choice([2, 3, 4, 5, 6, 8, 10]), rng.choice(DAYS), rng.choice(HOURS), rng.choice(TITLES)
        if smallest_free_room(rooms, booked, people, day, hour) is None:
            continue
        request = (f"Book the smallest room that seats {people} people on {day} at {hour}:00 for {title!r}, "
                   "then tell me which room you booked.")
        rows.append({"id": f"{prefix}_{len(rows):03d}", "prompt": [{"role": "user", "content": request}],
                     "calendar_seed": calendar_seed, "people": people, "day": day, "hour": hour, "title": title,
                     "trace": expert_trace(rooms, booked, people, day, hour, title)})
    return rows
