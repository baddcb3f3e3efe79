"""sender: reach LMS participants by e-mail, and reach them anyway when e-mail fails."""
