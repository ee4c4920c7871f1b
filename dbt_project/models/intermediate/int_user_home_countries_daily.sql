{{ user_home_countries_daily(ref('fct_transactions')) }}
