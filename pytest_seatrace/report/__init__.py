"""What a race says afterwards: the terminal summary, the HTML and JSON files, the violation message.

Every part reads the same race document (``core.document.RaceDoc``), built once per race.
"""
