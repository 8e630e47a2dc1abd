"""A toolbox of many look-alike tools, for the tests of tool selection: eight kinds of task,
each repeated as several services."""

from __future__ import annotations

TOPICS = [
    ("get_weather", "Current weather and forecast for a city"),
    ("send_email", "Send an email message to a recipient"),
    ("convert_currency", "Convert an amount of money between currencies"),
    ("book_flight", "Book a flight ticket between two airports"),
    ("translate_text", "Translate text into another language"),
    ("stock_price", "Latest stock market price of a company ticker"),
    ("play_music", "Play a song or playlist on the speaker"),
    ("set_alarm", "Set an alarm clock for a given time"),
]
