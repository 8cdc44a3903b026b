-- Record a confirmed Cognito user. Safe to repeat: a second call for the same sub adds nothing.
INSERT INTO public.users (display_name, email, handle, cognito_user_id)
VALUES (%(display_name)s, %(email)s, %(handle)s, %(cognito_user_id)s)
ON CONFLICT (cognito_user_id) DO NOTHING
