"""Clients of the services the UI talks to; no Streamlit import here, so they are plain, testable code."""
