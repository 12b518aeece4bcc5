"""The app's screens: chat (default), settings, precision menu, help."""
