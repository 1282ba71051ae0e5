<%--
  What the request looked like from Tomcat, one key=value per line, for
  cmd/portico/tomcat_test.go. Sets a cookie and counts visits in the session
  (so Tomcat sends JSESSIONID). Answers GET and urlencoded POST alike; "p"
  is the request parameter echoed.
--%><%@ page contentType="text/plain; charset=UTF-8" pageEncoding="UTF-8" session="true" %><%!
  static String orEmpty(String s) {
    return s == null ? "" : s;
  }
%><%
  request.setCharacterEncoding("UTF-8");
  Cookie flavour = new Cookie("flavour", "vanilla");
  flavour.setPath(request.getContextPath());
  response.addCookie(flavour);
  Integer visits = (Integer) session.getAttribute("visits");
  visits = visits == null ? 1 : visits + 1;
  session.setAttribute("visits", visits);

  out.println("method=" + request.getMethod());
  out.println("uri=" + request.getRequestURI());
  out.println("query=" + orEmpty(request.getQueryString()));
  out.println("remote_addr=" + request.getRemoteAddr());
  out.println("server_name=" + request.getServerName());
  out.println("server_port=" + request.getServerPort());
  out.println("scheme=" + request.getScheme());
  out.println("host=" + orEmpty(request.getHeader("Host")));
  out.println("xff=" + orEmpty(request.getHeader("X-Forwarded-For")));
  out.println("xfp=" + orEmpty(request.getHeader("X-Forwarded-Proto")));
  out.println("xfh=" + orEmpty(request.getHeader("X-Forwarded-Host")));
  out.println("p=" + orEmpty(request.getParameter("p")));
  out.println("session=" + session.getId());
  out.println("visits=" + visits);
%>
